# The suite's fixtures are thin glue over the perfgate package; see fixtures/ and perfgate/pytest_plugin.py.
# The plugin is registered through the `pytest11` entry point when perfgate is installed; from a bare
# checkout (an offline GPU host with only PYTHONPATH set) this conftest loads it instead.
import importlib.metadata

pytest_plugins = ["fixtures.server", "fixtures.phase"]
if not any(ep.value == "perfgate.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
    pytest_plugins.insert(0, "perfgate.pytest_plugin")
