"""The benchmarks of batchtunnel, run as modules from the repository root: ``python -m bench.run`` (the
side-by-side table; ``bench/run.sh`` installs sshd first), ``python -m bench.storm`` (reconnect storm),
``python -m bench.resume`` (resumption under link resets), ``python -m bench.soak`` (healthy agents
downloading while an attacker comes and goes; ``--ci`` for a 2-minute version); ``bench.idle_agents`` is
their helper process, ``bench.harness`` what they share, and the target they measure against is the tests'
own stand-in notebook (tests/support/target_server.py). Results go to docs/benchmarks.md with
``--write-docs``.
"""
