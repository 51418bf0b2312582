"""The broker kit behind ``titik-ctl broker``: CA, identities, mosquitto.conf, ACL, CRL."""
