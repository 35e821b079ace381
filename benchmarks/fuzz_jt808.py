"""Long fuzz run of the JT/T 808 decoder: random and mutated frames, no unhandled exception.

    .venv/bin/python benchmarks/fuzz_jt808.py --iterations 1000000 [--seed 1]
    .venv/bin/python benchmarks/fuzz_jt808.py --atheris -atheris_runs=1000000   # coverage-guided

Each iteration builds one input and pushes it through the whole receive path without a
socket: stream splitter, unescape, check code, header, split reassembly, body parsers,
GpsPing mapping and the `decode` JSON view. Only FrameError (decoder) and PingRejected
(mapping) may come out; anything else is printed with its input and the run fails.
Inputs: a third pure random bytes, a third mutated vectors and generated frames (envelope
left broken), a third mutated payloads re-wrapped with valid escaping and check code so the
mutation reaches the header and body parsers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import struct
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.jt808 import codec  # noqa: E402
from services.jt808.mapping import (  # noqa: E402
    DeviceDirectory,
    VendorConfig,
)
from tests.unit.jt808.support import decode_everything  # noqa: E402

DIRECTORY = DeviceDirectory(VendorConfig.model_validate({"default_profile": "g10ls"}))


def check(data: bytes) -> None:
    """The property under test (shared with the suite); raises on anything undocumented."""
    decode_everything(data, DIRECTORY, backfill=True)


def seeds() -> list[bytes]:
    vectors = json.loads((ROOT / "tests" / "fixtures" / "jt808" / "vectors.json").read_text())
    out = [bytes.fromhex(c["frame"]) for c in vectors["decode"]]
    phone = codec.phone_bcd("13800138000")
    loc = codec.encode_location_body(
        lat=31.2,
        lon=-121.4,
        time=datetime(2024, 5, 1, 12, 0, 0),
        alarm_flags=0x1F0001,
        items=(
            codec.Item(0x01, b"\x00\x00\x01\x00"),
            codec.Item(0xF1, b"8986"),
            codec.Item(0x30, b"\x1f"),
        ),
    )
    batch = codec.encode_batch_body([loc] * 5, batch_type=1)
    out += [
        codec.encode_frame(msg_id=0x0200, phone_raw=phone, serial=1, body=loc),
        codec.encode_frame(msg_id=0x0704, phone_raw=phone, serial=2, body=batch),
        codec.encode_frame(
            msg_id=0x0200,
            phone_raw=codec.phone_bcd("1" * 20, version_2019=True),
            serial=3,
            body=loc,
            protocol_version=1,
        ),
        codec.encode_frame(
            msg_id=0x0704, phone_raw=phone, serial=4, body=batch[:100], split=(2, 1)
        ),
        codec.encode_frame(
            msg_id=0x0704, phone_raw=phone, serial=5, body=batch[100:], split=(2, 2)
        ),
        codec.encode_frame(
            msg_id=0x0102,
            phone_raw=codec.phone_bcd("1" * 20, version_2019=True),
            serial=6,
            body=b"\x04abcd" + b"8" * 15 + b"v1".ljust(20, b"\x00"),
            protocol_version=1,
        ),
    ]
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            buf[pos:pos] = bytes([rng.choice([0x7E, 0x7D, 0x00, 0xFF])]) * rng.randint(1, 3)
        elif op == 5 and len(buf) > 4:  # interesting integers in a header/body word
            p = min(pos, len(buf) - 2)
            buf[p : p + 2] = struct.pack(
                ">H", rng.choice([0, 1, 0x3FF, 0x2000, 0x4000, 0x7FFF, 0xFFFF])
            )
        elif op == 6:
            buf += buf[: rng.randint(0, len(buf))]  # splice/duplicate
    return bytes(buf)


def rewrap(payload: bytes) -> bytes:
    body = payload.replace(b"\x7e", b"")
    with contextlib.suppress(codec.FrameError):
        body = codec.unescape(body)
    body = body[:-1]
    return b"\x7e" + codec.escape(body + bytes((codec.checksum(body),))) + b"\x7e"


def run(iterations: int, seed: int) -> int:
    rng = random.Random(seed)
    corpus = seeds()
    failures = 0
    started = time.perf_counter()
    for i in range(1, iterations + 1):
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(rng.randint(0, 1200))
            if rng.random() < 0.5:
                data = b"\x7e" + data + b"\x7e"
        elif kind == 1:
            data = mutate(rng, rng.choice(corpus))
        else:
            data = rewrap(mutate(rng, rng.choice(corpus)))
        try:
            check(data)
        except Exception:
            failures += 1
            print(f"FAIL at iteration {i}: {data.hex()}", flush=True)
            traceback.print_exc()
            if failures >= 10:
                break
        if i % 100_000 == 0:
            rate = i / (time.perf_counter() - started)
            print(f"  {i:,} inputs, {failures} failures, {rate:,.0f}/s", flush=True)
    elapsed = time.perf_counter() - started
    print(f"done: {i:,} inputs in {elapsed:.0f}s, seed {seed}, {failures} failures", flush=True)
    return 1 if failures else 0


def run_atheris(argv: list[str]) -> None:
    import atheris

    def target(data: bytes) -> None:
        check(data)

    corpus = seeds()
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *argv, *[]], target)
    del corpus
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--atheris", action="store_true", help="coverage-guided run with atheris")
    args, rest = parser.parse_known_args()
    if args.atheris:
        run_atheris(rest)
    sys.exit(run(args.iterations, args.seed))


if __name__ == "__main__":
    main()
