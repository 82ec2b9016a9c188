"""Flower's SecAgg+ on the settings of `guardian-bench secagg`, timed the same way.

Runs the server- and client-side steps of Flower's SecAgg+ (flwr's own functions:
`combine_shares`, `create_shares`, `pseudo_rand_gen`, `generate_shared_key`, `quantize`,
`parameters_addition` / `parameters_subtraction` / `parameters_mod`), in the order
`SecAggPlusWorkflow` and `secaggplus_mod` run them. Masked vectors are random arrays of the
right shape and type (the work of summing and unmasking does not depend on their values);
shares and keys are real. Prints one JSON object: seconds per setting (median and best of
--repeat runs).

Usage: python bench_flower.py [--repeat 3] [--scale 1.0]
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import flwr
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from cryptography.hazmat.primitives.asymmetric import ec

MOD_RANGE = 1 << 32
QUANT_RANGE = 1 << 22
CLIP_RANGE = 8.0


def key_pair():
    sk = ec.generate_private_key(ec.SECP384R1())
    return sk, sk.public_key()


def timed(fn, repeat):
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"median": statistics.median(runs), "best": min(runs)}


def masked_vectors(rng, n, d):
    # What `secaggplus_mod` uploads: int64 arrays already reduced mod 2^32.
    return [[rng.integers(0, MOD_RANGE, d, dtype=np.int64)] for _ in range(n)]


def server_sum(vectors):
    # `collect_masked_vectors_stage`.
    masked = None
    for v in vectors:
        masked = v if masked is None else parameters_addition(masked, v)
    return parameters_mod(masked, MOD_RANGE)


def neighbours_of(n, k, rng):
    # A random ring with k/2 neighbours on each side, as the Rust side builds it.
    order = rng.permutation(n)
    pos = {int(p): i for i, p in enumerate(order)}
    half = k // 2
    return {
        i: sorted({int(order[(pos[i] + d) % n]) for d in range(1, half + 1)}
                  | {int(order[(pos[i] - d) % n]) for d in range(1, half + 1)})
        for i in range(n)
    }


def unmask_setup(rng, n, k, t, d, dropout):
    """Keys, secrets and the shares a server collects, for one round."""
    neighbours = neighbours_of(n, k, rng)
    keys = {i: key_pair() for i in range(n)}
    seeds = {i: os.urandom(32) for i in range(n)}
    dropped = set(int(x) for x in rng.choice(n, int(n * dropout), replace=False))
    active = [i for i in range(n) if i not in dropped]
    from cryptography.hazmat.primitives import serialization

    def sk_bytes(sk):
        return sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())

    collected = {}
    for i in range(n):
        holders = [i] + neighbours[i]
        secret = seeds[i] if i in active else sk_bytes(keys[i][0])
        shares = create_shares(secret, t, len(holders))
        alive = [s for h, s in zip(holders, shares) if h in active]
        collected[i] = alive
    return neighbours, keys, active, collected


def unmask(masked_vector, neighbours, keys, active, collected, t):
    # `unmask_stage` of SecAggPlusWorkflow (secret parsing as in flwr's bytes_to_private_key).
    from cryptography.hazmat.primitives import serialization
    active_set = set(active)
    for nid, share_list in collected.items():
        if len(share_list) < t:
            raise RuntimeError("not enough shares")
        secret = combine_shares(share_list)
        if nid in active_set:
            private_mask = pseudo_rand_gen(secret, MOD_RANGE, get_parameters_shape(masked_vector))
            masked_vector = parameters_subtraction(masked_vector, private_mask)
        else:
            sk = serialization.load_pem_private_key(secret, password=None)
            for nb in neighbours[nid]:
                if nb not in active_set:
                    continue
                shared_key = generate_shared_key(sk, keys[nb][1])
                pairwise = pseudo_rand_gen(shared_key, MOD_RANGE, get_parameters_shape(masked_vector))
                if nid > nb:
                    masked_vector = parameters_addition(masked_vector, pairwise)
                else:
                    masked_vector = parameters_subtraction(masked_vector, pairwise)
    return parameters_mod(masked_vector, MOD_RANGE)


def client_mask(params, seed, my_sk, peer_pks, me):
    # `_collect_masked_vectors` of secaggplus_mod (weight factor left out on both sides).
    q = quantize(params, CLIP_RANGE, QUANT_RANGE)
    dims = [a.shape for a in q]
    q = parameters_addition(q, pseudo_rand_gen(seed, MOD_RANGE, dims))
    for nid, pk in peer_pks:
        shared_key = generate_shared_key(my_sk, pk)
        mask = pseudo_rand_gen(shared_key, MOD_RANGE, dims)
        q = parameters_addition(q, mask) if me > nid else parameters_subtraction(q, mask)
    return parameters_mod(q, MOD_RANGE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every dimension (quick runs)")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    d1m = max(1, int(1_000_000 * args.scale))
    d100k = max(1, int(100_000 * args.scale))
    out = {"library": f"flwr {flwr.__version__}, numpy {np.__version__}"}

    vectors = masked_vectors(rng, 100, d1m)
    out["server_sum"] = timed(lambda: server_sum(vectors), args.repeat)
    del vectors
    print("flower: server sum done", file=sys.stderr)

    params = [rng.normal(0, 1, d1m).astype(np.float32)]
    my_sk, _ = key_pair()
    peers = [(i + 1, key_pair()[1]) for i in range(20)]
    seed = os.urandom(32)
    out["client_mask"] = timed(lambda: client_mask(params, seed, my_sk, peers, 0), args.repeat)
    print("flower: client mask done", file=sys.stderr)

    secret = os.urandom(32)
    shares = create_shares(secret, 51, 100)
    reps = 50
    out["shamir_share"] = timed(lambda: [create_shares(secret, 51, 100) for _ in range(reps)], args.repeat)
    out["shamir_combine"] = timed(lambda: [combine_shares(shares[:51]) for _ in range(reps)], args.repeat)
    for k in ("shamir_share", "shamir_combine"):
        out[k] = {m: v / reps for m, v in out[k].items()}
    assert combine_shares(shares[49:]) == secret
    print("flower: shamir done", file=sys.stderr)

    nb, keys, active, collected = unmask_setup(rng, 100, 20, 11, d1m, 0.10)
    masked = [rng.integers(0, MOD_RANGE, d1m, dtype=np.int64)]
    out["server_unmask"] = timed(lambda: unmask(masked, nb, keys, active, collected, 11), args.repeat)
    print("flower: server unmask done", file=sys.stderr)

    nb, keys, active, collected = unmask_setup(rng, 500, 30, 11, d100k, 0.30)
    vectors = masked_vectors(rng, len(active), d100k)

    def full_round():
        unmask(server_sum(vectors), nb, keys, active, collected, 11)

    out["full_round"] = timed(full_round, args.repeat)
    print("flower: full round done", file=sys.stderr)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
