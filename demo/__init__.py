"""`python -m demo`: the whole path on this machine, from export to a load test."""
