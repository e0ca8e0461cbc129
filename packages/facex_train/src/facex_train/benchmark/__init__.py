"""The paper's evaluation protocols (Tables 1-3) on a user's copy of FF++, VoxCeleb1 and FFHQ (``facex benchmark``).

``protocols``: each benchmark as data (datasets, task, pair-list rule, columns); ``datasets``: readers for the
public on-disk layouts; ``runner``: one measurement path for every protocol, resumable, results in the paper's
layout beside the published rows (``paper_tables.json``); ``cli``: the command. Nothing is imported here: the
``facex`` command loads ``cli`` at every start, and it must not pull in torch or torchmetrics.
"""
