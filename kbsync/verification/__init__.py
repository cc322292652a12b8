"""The verification service: what an edit is checked on, its checks, damage, the regression
gate, and one verdict per batch with one verdict per edit inside it."""
