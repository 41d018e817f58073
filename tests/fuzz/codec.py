"""Coverage-guided fuzzing of the codec with atheris (libFuzzer): any bytes through
``ocpp_j.decode``; only FrameError may come out, and a frame that decodes re-encodes to the
same frame and gets a schema verdict without raising.

    .venv/bin/python tests/fuzz/codec.py CORPUS_DIR -runs=200000   # tests/test_hostile.py runs it briefly

An empty CORPUS_DIR is seeded with one frame of each message type.
"""

import sys

import atheris

with atheris.instrument_imports():
    from twin import ocpp_j, schemas

SEEDS = [b'[2,"1","BootNotification",{"reason":"PowerUp","chargingStation":{"model":"M","vendorName":"V"}}]',
         b'[3,"1",{}]', b'[4,"1","GenericError","",{}]', b'[5,"1","GenericError","",{}]', b'[6,"1","A",{}]']


def one(data: bytes) -> None:
    try:
        frame = ocpp_j.decode(data)
    except ocpp_j.FrameError:
        return
    again = ocpp_j.decode(ocpp_j.encode(frame))
    assert again == frame, (frame, again)
    if frame.action is not None:
        kind = "Request" if frame.msg_type in (2, 6) else "Response"
        schemas.problem("ocpp2.1", frame.action, kind, frame.payload)


if __name__ == "__main__":
    from pathlib import Path

    for arg in sys.argv[1:]:
        corpus = Path(arg)
        if not arg.startswith("-") and corpus.is_dir() and not any(corpus.iterdir()):
            for i, seed in enumerate(SEEDS):
                (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
