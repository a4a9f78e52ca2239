"""`legato load`: a load generator with scenarios (children, mix, timers, idle).

Modules: `app` (the Lua app it runs), `scenarios` (what each scenario starts and checks),
`driver` (where the engine runs, starting and watching, stop and resume), `report` (JSON and the
PNG plot), `progress` (the progress bar, RSS and store size), `cli` (the click group).
"""
