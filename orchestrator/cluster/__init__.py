"""Clusters: check their YAMLs before launching them, and submit jobs to them.

    config.py    read, describe and validate cluster YAMLs (`orch cluster validate | pools`),
                 node types of a `ray up` config (NodeType, node_types)
    ray_up.py    the rules for a `ray up` config: Ray's schema, worker pools, GPU counts of
                 AWS / GCP machine types, security groups, start commands, token auth
    kuberay.py   the rules for KubeRay RayCluster / RayJob objects
    rules.py     what both kinds share: the Ray version this project runs, Ray images, quoting
    jobs.py      the Ray Jobs API client: `orch submit | logs | status | stop | list`

The storage rule for runs that span nodes (`require_shared_storage`) is in orchestrator/runtime.py;
the commands themselves in orchestrator/cli/cluster.py and orchestrator/cli/jobs.py.
"""
