"""The microscope station: frame sources, the capture loop, its durable log, review and reports.

Modules: :mod:`.sources` (cameras, folders, fakes behind ``FrameSource``),
:mod:`.framegate` (focus and stage-motion gates), :mod:`.loop` (``Station``),
:mod:`.log` and :mod:`.schema` (the SQLite log), :mod:`.differential`,
:mod:`.report` (batch rows and CSV), :mod:`.review` / :mod:`.reviewcsv`
(verify, correct and sign), :mod:`.fhir` (the signed differential as FHIR).
numpy + OpenCV + a TFLite runtime only; this is what runs on the Raspberry Pi.
"""
