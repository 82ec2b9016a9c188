#!/usr/bin/env python3
"""The peer side of `guardian-bench privacy`: the same workloads through Google's
dp_accounting, timed in this process. Prints one JSON object.

  bench_dp_accounting.py --events 10000 --pld-events 1000

identical:     N events (q = 0.01, sigma = 1.1) composed one by one, then epsilon at 1e-5
heterogeneous: N events, event i with q = 0.001 + (i % 97) * 0.0005 and
               sigma = 0.8 + (i % 89) * 0.02, composed one by one, then epsilon at 1e-5
pld_identical, pld_heterogeneous: the same event sequences (--pld-events of them)
               through the PLD accountant (discretization 1e-4, the default)
"""

import argparse
import json
import time
from importlib import metadata

import dp_accounting
from absl import logging as absl_logging
from dp_accounting.pld import pld_privacy_accountant as pld
from dp_accounting.rdp import rdp_privacy_accountant as rdp

absl_logging.set_verbosity(absl_logging.ERROR)


def run(events, accountant=rdp.RdpAccountant):
    acc = accountant()
    started = time.perf_counter()
    for q, sigma in events:
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)))
    eps = acc.get_epsilon(1e-5)
    return {"seconds": time.perf_counter() - started, "epsilon": float(eps)}


def heterogeneous(n):
    return [(0.001 + (i % 97) * 0.0005, 0.8 + (i % 89) * 0.02) for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--pld-events", type=int, default=1000)
    args = ap.parse_args()
    n, m = args.events, args.pld_events
    out = {
        "library": f"dp_accounting {metadata.version('dp-accounting')}",
        "identical": run([(0.01, 1.1)] * n),
        "heterogeneous": run(heterogeneous(n)),
        "pld_identical": run([(0.01, 1.1)] * m, pld.PLDAccountant),
        "pld_heterogeneous": run(heterogeneous(m), pld.PLDAccountant),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
