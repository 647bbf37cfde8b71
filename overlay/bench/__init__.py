"""Every benchmark's measuring code, one pattern: a frozen config, ``run(config, progress)``.

Each bench module exposes a frozen config dataclass and ``async def run(config,
progress) -> Report`` (the report has ``to_json()``), and knows nothing of
argparse or printing: :mod:`overlay.cli.bench` parses, runs and renders.  The
simulator itself (emulated network, topologies, the hybrid world) is
:mod:`overlay.sim`; the simulated benches here run on it.
"""
