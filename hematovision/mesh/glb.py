"""A minimal glTF 2.0 binary (.glb) writer in numpy: one triangle mesh with vertex colours.

Works on the Raspberry Pi (no trimesh, no Open3D) and writes what viewers such
as Gradio's ``gr.Model3D`` display: one node, one mesh, one primitive with
``POSITION`` (float32, with min/max as the spec requires), ``NORMAL``
(float32, unit length), ``COLOR_0`` (float32 RGB, *linear* as the spec
requires: sRGB colours are converted) and uint32 ``indices``; a matte,
double-sided material (a 2.5D cell surface is open underneath).

Layout (glTF 2.0, section "GLB File Format Specification"): a 12-byte header
(magic ``glTF``, version 2, total length), a JSON chunk padded with spaces to
4 bytes, and a BIN chunk padded with zeros to 4 bytes; every bufferView
starts at a 4-byte-aligned offset.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

MAGIC = 0x46546C67  # b"glTF"
CHUNK_JSON = 0x4E4F534A  # b"JSON"
CHUNK_BIN = 0x004E4942  # b"BIN\0"
FLOAT, UINT32 = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
TRIANGLES = 4


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (or [0, 1] float) -> linear [0, 1] float32 (the IEC 61966-2-1 curve)."""
    c = rgb.astype(np.float32)
    if rgb.dtype == np.uint8:
        c = c / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def glb_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, normals: np.ndarray,
              *, name: str = "cell") -> bytes:
    """Encode a mesh as GLB bytes. ``colors`` are sRGB uint8 (N, 3)."""
    pos = np.ascontiguousarray(vertices, np.float32)
    nrm = np.ascontiguousarray(normals, np.float32)
    col = np.ascontiguousarray(srgb_to_linear(np.asarray(colors)[:, :3]), np.float32)
    idx = np.ascontiguousarray(faces, np.uint32).reshape(-1)
    blobs = [pos.tobytes(), nrm.tobytes(), col.tobytes(), idx.tobytes()]
    views, offset = [], 0
    for blob, target in zip(blobs, (ARRAY_BUFFER, ARRAY_BUFFER, ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER)):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob), "target": target})
        offset += _pad4(len(blob))
    n = len(pos)
    accessors = [
        {"bufferView": 0, "componentType": FLOAT, "count": n, "type": "VEC3",
         "min": pos.min(axis=0).tolist() if n else [0, 0, 0], "max": pos.max(axis=0).tolist() if n else [0, 0, 0]},
        {"bufferView": 1, "componentType": FLOAT, "count": n, "type": "VEC3"},
        {"bufferView": 2, "componentType": FLOAT, "count": n, "type": "VEC3"},
        {"bufferView": 3, "componentType": UINT32, "count": int(idx.size), "type": "SCALAR"},
    ]
    doc = {
        "asset": {"version": "2.0", "generator": "hematovision"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{
            "attributes": {"POSITION": 0, "NORMAL": 1, "COLOR_0": 2},
            "indices": 3, "material": 0, "mode": TRIANGLES}]}],
        "materials": [{"name": "vertex-colour", "doubleSided": True,
                       "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0,
                                                "roughnessFactor": 0.9}}],
        "buffers": [{"byteLength": offset}],
        "bufferViews": views,
        "accessors": accessors,
    }
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (_pad4(len(js)) - len(js))
    binary = b"".join(blob + b"\0" * (_pad4(len(blob)) - len(blob)) for blob in blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join([
        struct.pack("<III", MAGIC, 2, total),
        struct.pack("<II", len(js), CHUNK_JSON), js,
        struct.pack("<II", len(binary), CHUNK_BIN), binary,
    ])


def write_glb(path: str | Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, normals: np.ndarray,
              ) -> Path:
    path = Path(path)
    path.write_bytes(glb_bytes(vertices, faces, colors, normals, name=path.stem or "cell"))
    return path


def _pad4(n: int) -> int:
    return (n + 3) & ~3
