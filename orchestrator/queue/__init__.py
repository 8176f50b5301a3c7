"""A queue for the cluster: priorities, quotas, gang admission, preemption that resumes, and
why a job waits (docs/queue.md).

policy.py   who starts next (pure)
store.py    the state: SQLite on the head, compare-and-set moves
service.py  the service: a detached actor on the head ticking the policy over the Jobs API
client.py   connect, find or start the actor, turn a spec into a queued job
"""
