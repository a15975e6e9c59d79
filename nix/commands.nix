# flakem's command names, from the one list at the root of the repository: the links, the
# per-command packages, the overlay and the modules all take them from here.
builtins.fromJSON (builtins.readFile ../commands.json)
