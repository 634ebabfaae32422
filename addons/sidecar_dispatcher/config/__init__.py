"""The config file: YAML read into the core's immutable `RuleSet`, every problem located.

    rules = load_config("config.yaml")        # load.py; ConfigError lists file:line:col problems

load.py reads the file; reader.py walks the document (walker.py: leaves, mappings, limits;
routes.py, matches.py, numbers.py: the `routes` and `unmatched` parts); destinations.py parses
URLs; problems.py says what is wrong and where; file.py and watch.py notice a changed file;
schema.json is the same schema for editors. No mitmproxy here.
"""
