"""Console actions: prepared in central, signed in the operator's page, published by central."""
