"""A site's trainer for `guardian fl agent --train-cmd` (the tests' and the README's
worked example; Python's standard library only, so it runs anywhere).

It reads the global model from $GUARDIAN_GLOBAL_MODEL (.npy or safetensors, as
$GUARDIAN_FORMAT says): the weights of a logistic regression, the bias last. It trains
them on the site's own rows (TRAINER_DATA: a CSV of features then a 0/1 label, e.g. from
`guardian fl demo-data`) with TRAINER_EPOCHS epochs (default 5) of mini-batch gradient
descent, and writes the update (new weights minus the global ones) to $GUARDIAN_UPDATE in
the same format. A PyTorch trainer does the same around its own training loop: read the
global weights, train, write the difference.

For the tests: TRAINER_LOG appends "hospital round values" per call; TRAINER_FAIL_ROUND=N
exits 1 in round N; TRAINER_SHORT_ROUND=N writes one value too few in round N.
"""

import json
import math
import os
import struct
import sys


def read_npy(data):
    if data[:6] != b"\x93NUMPY":
        raise SystemExit("not a .npy file")
    header_len = struct.unpack("<H", data[8:10])[0]
    header = data[10:10 + header_len].decode()
    body = data[10 + header_len:]
    if "'<f4'" in header:
        return list(struct.unpack("<%df" % (len(body) // 4), body))
    if "'<f8'" in header:
        return list(struct.unpack("<%dd" % (len(body) // 8), body))
    raise SystemExit("unsupported dtype: " + header)


def write_npy(values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % len(values)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack("<%df" % len(values), *values)


def read_safetensors(data):
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = []
    tensors = sorted((v["data_offsets"], v["dtype"]) for k, v in header.items() if k != "__metadata__")
    for (start, end), dtype in tensors:
        code, width = {"F32": ("f", 4), "F64": ("d", 8)}[dtype]
        out.extend(struct.unpack("<%d%s" % ((end - start) // width, code), body[start:end]))
    return out


def write_safetensors(values):
    header = json.dumps({"update": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, 4 * len(values)]}}).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    return struct.pack("<Q", len(header)) + header + struct.pack("<%df" % len(values), *values)


def read_rows(path):
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            cells = line.strip().split(",")
            try:
                values = [float(c) for c in cells]
            except ValueError:
                if i == 0:
                    continue  # a header
                raise
            rows.append((values[:-1], values[-1]))
    return rows


def train(weights, rows, epochs, rate=0.1, batch=16, l2=1e-3):
    """Mini-batch gradient descent on the logistic loss, rows in a fixed order."""
    w = list(weights)
    for _ in range(epochs):
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            grad = [0.0] * len(w)
            for x, y in part:
                z = w[-1] + sum(wj * xj for wj, xj in zip(w, x))
                p = 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))
                for j, xj in enumerate(x):
                    grad[j] += (p - y) * xj
                grad[-1] += p - y
            for j in range(len(w)):
                reg = l2 * w[j] if j < len(w) - 1 else 0.0
                w[j] -= rate * (grad[j] / len(part) + reg)
    return w


def main():
    fmt = os.environ["GUARDIAN_FORMAT"]
    round_ = int(os.environ["GUARDIAN_ROUND"])
    with open(os.environ["GUARDIAN_GLOBAL_MODEL"], "rb") as f:
        data = f.read()
    weights = read_npy(data) if fmt == "npy" else read_safetensors(data)
    log = os.environ.get("TRAINER_LOG")
    if log:
        with open(log, "a") as f:
            f.write("%s %d %d\n" % (os.environ["GUARDIAN_HOSPITAL"], round_, len(weights)))
    if os.environ.get("TRAINER_FAIL_ROUND") == str(round_):
        print("the trainer gives up in round %d" % round_, file=sys.stderr)
        sys.exit(1)
    rows = read_rows(os.environ["TRAINER_DATA"])
    if rows and len(rows[0][0]) + 1 != len(weights):
        raise SystemExit("the data has %d features, the model %d weights" % (len(rows[0][0]), len(weights)))
    trained = train(weights, rows, int(os.environ.get("TRAINER_EPOCHS", "5")))
    update = [a - b for a, b in zip(trained, weights)]
    if os.environ.get("TRAINER_SHORT_ROUND") == str(round_):
        update = update[:-1]
    out = write_npy(update) if fmt == "npy" else write_safetensors(update)
    with open(os.environ["GUARDIAN_UPDATE"], "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
