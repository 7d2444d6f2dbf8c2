"""Cell analysis on stained images: stain optical density, the one segmentation path, morphology, cells in fields.

Modules: :mod:`.stain` (optical density, Beer-Lambert; nucleus and foreground
masks), :mod:`.segmentation` (the one path: density maps -> nuclei -> traced
cells, for a whole field and for the central cell), :mod:`.shape` (area,
equivalent diameter, circularity, eccentricity, solidity of a mask),
:mod:`.morphology` (the central cell's features compared with a reference),
:mod:`.detection` (white cells found and cropped in a whole field),
:mod:`.reframe` (a tight crop reframed to PBC-like framing).
numpy + OpenCV only; runs on the station.
"""
