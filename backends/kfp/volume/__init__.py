"""The shared volume every pod of a run mounts. Imports nothing of backends.kfp: everything stands on it.

layout       the volume's folders (runs/, data/), one owner as RunDir is the run dir's
permissions  what the volume-permissions pod runs: the volume's root made writable for the steps' user
"""
