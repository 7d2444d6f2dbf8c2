"""Cell analysis on stained images: stain optical density, the one segmentation path, morphology, cells in fields.

Modules: :mod:`.stain` (optical density, nucleus and cell masks, cell regions),
:mod:`.morphology` (the central cell's segmentation and shape/colour features
compared with a reference), :mod:`.detection` (white cells found and cropped
in a whole field), :mod:`.reframe` (a tight crop reframed to PBC-like framing).
numpy + OpenCV only; runs on the station.
"""
