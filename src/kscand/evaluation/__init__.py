"""Evaluation: baseline policies, the cost model, the promotion ledger and `kscand compare`."""
