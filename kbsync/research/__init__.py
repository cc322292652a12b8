"""Research code: measurements that the service does not run (the lifelong-editing benchmark).

benchmarks/lifelong.py drives it; nothing under kbsync/ outside this package imports it.
"""
