"""The DSMB report's sections, one module per section: pure functions, small result tables out.

Each ``*_section`` function takes a :class:`DsmbInputs` (the protocol, the blinded snapshot
tables cut at the data cut-off, and, in a closed session only, each participant's coded arm) and
returns a :class:`Section`: display tables whose cells are text, the data of its figures, and the
forms it needed but did not find. Nothing here reads a file, draws or renders.

Every study fact a table states (screened, randomised, treated, the populations, which adverse
events are treatment-emergent, serious adverse events, deaths, discontinuations of the study and
of treatment and those due to an adverse event, deviations and their major/minor class, query
status and age) comes from one derivation, :func:`studyman.facts.derive_facts`, computed once
per report (:meth:`DsmbInputs.facts`) with the analysis plan's rules; no section derives them
again, so that a number has one value in every table, in ``facts.json`` and in the other outputs
of the same snapshot and cut-off. The definitions are printed in the report's "Definitions"
section in the words of :func:`studyman.facts.rule_texts`.

An open session is computed with ``arms=None``: every table has one pooled ``Total`` column.

The module of a section is named for it (``status``, ``adverse_events``, ``liver``, ...):
:mod:`.base` holds the types and helpers every section uses, :mod:`.shared` the derived data
several sections read; :data:`studyman.reporting.dsmb.SECTION_BUILDERS` is the report's order.
"""
