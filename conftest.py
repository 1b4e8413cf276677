# The suite's fixtures are thin glue over the perfgate package; see fixtures/ and perfgate/pytest_plugin.py.
# (The pytest plugin itself is registered through the `pytest11` entry point in pyproject.toml.)
pytest_plugins = ["fixtures.server", "fixtures.phase"]
