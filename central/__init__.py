"""Titik central consumer (later issues)."""
