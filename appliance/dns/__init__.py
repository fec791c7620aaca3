"""Authoritative DNS for the cluster's Services: `zone` turns planned records into
precomputed wire answers, `responder` answers a query from them, `server` puts that on
UDP and TCP sockets."""
