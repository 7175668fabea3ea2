#!/usr/bin/env python3
"""Where exact colours appear in a PNG, by horizontal bands (Python stdlib only).

Usage: png_bands.py IMAGE.png RRGGBB [RRGGBB ...]

Prints JSON: for each colour, the bands of consecutive pixel rows that hold
at least MIN_PIXELS pixels of exactly that colour, as [first_row, last_row,
pixels]. tests/tests/observability.rs uses it to check what headless
Chromium actually painted for the status page (a table row is one band).
Decodes 8-bit RGB/RGBA, non-interlaced PNGs (what Chromium writes); any
other kind is refused with a message, never guessed.
"""
import json
import struct
import sys
import zlib

MIN_PIXELS = 20


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG")
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if hdr is None:
        sys.exit(f"{path}: no IHDR")
    width, height, depth, ctype, _, _, interlace = hdr
    if depth != 8 or ctype not in (2, 6) or interlace != 0:
        sys.exit(f"{path}: unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
            elif f != 0:
                sys.exit(f"{path}: bad filter type {f}")
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    width, bpp, rows = decode(sys.argv[1])
    out = {}
    for hexcol in sys.argv[2:]:
        want = bytes.fromhex(hexcol)
        bands, cur = [], None
        for y, row in enumerate(rows):
            n = sum(1 for x in range(width) if row[x * bpp:x * bpp + 3] == want)
            if n >= MIN_PIXELS:
                if cur and cur[1] == y - 1:
                    cur[1], cur[2] = y, cur[2] + n
                else:
                    cur = [y, y, n]
                    bands.append(cur)
        out[hexcol] = bands
    print(json.dumps(out))


if __name__ == "__main__":
    main()
