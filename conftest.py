# perfgate's pytest plugin, and with it the fixtures (perfgate/pytest_fixtures.py), comes with the package's
# `pytest11` entry point once perfgate is installed; this repository's suite uses it like any other project.
# A bare checkout (an offline GPU host with only PYTHONPATH set) has no entry point, so this conftest loads
# the plugin module itself. When the entry point exists it is named instead: pytest skips a plugin already
# registered under that name (never a second copy), and still loads it when autoloading is off
# (PYTEST_DISABLE_PLUGIN_AUTOLOAD=1).
import importlib.metadata

_INSTALLED = any(ep.name == "perfgate" and ep.value == "perfgate.pytest_plugin"
                 for ep in importlib.metadata.entry_points(group="pytest11"))
pytest_plugins = ["perfgate"] if _INSTALLED else ["perfgate.pytest_plugin"]
