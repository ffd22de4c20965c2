"""Compiled scanner for the canonical shape of Binance USDT-M websocket messages.

Binance serialises each stream's messages with a fixed key order, so the common lines (diff
depth, bookTicker, trade, markPrice) can be parsed by checking every byte against that exact
shape in one numba pass over the file. Any line that deviates in the slightest (another key
order, spaces, another symbol, a non-market trade, a REST snapshot, malformed JSON) is left
for the general orjson path, which also produces the precise error for bad lines. Decimals are
converted as mantissa / 10**digits, which rounds exactly like Python's float() for the
magnitudes Binance sends (mantissa < 2**53); longer numbers go to the general path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

SLOW, DEPTH, BBO, TRADE, MARK = 0, 1, 2, 3, 4
INT64_MAX = 2**63 - 1

_POW10 = np.array([10.0**k for k in range(19)])


def _lit(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8).copy()


L_HEAD = _lit('{"stream":"')
L_DATA = _lit('","data":{"e":"')
L_DEPTH = _lit('depthUpdate","E":')
L_BBO = _lit('bookTicker","u":')
L_TRADE = _lit('trade","E":')
L_MARK = _lit('markPriceUpdate","E":')
L_T = _lit(',"T":')
L_E = _lit(',"E":')
L_S = _lit(',"s":"')
L_U1 = _lit('","U":')
L_U2 = _lit(',"u":')
L_PU = _lit(',"pu":')
L_B = _lit(',"b":[')
L_A = _lit('],"a":[')
L_END_DEPTH = _lit("]}}")
L_QB = _lit('","b":"')
L_QBQ = _lit('","B":"')
L_QA = _lit('","a":"')
L_QAQ = _lit('","A":"')
L_QT = _lit('","T":')
L_END = _lit("}}")
L_TT = _lit('","t":')
L_TP = _lit(',"p":"')
L_TQ = _lit('","q":"')
L_TX = _lit('","X":"MARKET","m":')
L_TRUE = _lit("true")
L_FALSE = _lit("false")
L_MP = _lit('","p":"')
L_MPP = _lit('","P":"')
L_MI = _lit('","i":"')
L_MR = _lit('","r":"')


@njit(cache=True, inline="always")
def _expect(buf, p, end, lit):
    n = lit.shape[0]
    if p + n > end:
        return -1
    for k in range(n):
        if buf[p + k] != lit[k]:
            return -1
    return p + n


@njit(cache=True)
def _int(buf, p, end):
    """JSON integer at p, non-negative and within int64: (value, new position) or (0, -1)."""
    v = 0
    q = p
    while q < end and 48 <= buf[q] <= 57:
        d = buf[q] - 48
        if v > (INT64_MAX - d) // 10:
            return 0, -1
        v = v * 10 + d
        q += 1
    # JSON has no leading zeros: orjson rejects them, so must the scanner.
    if q == p or (buf[p] == 48 and q - p > 1):
        return 0, -1
    return v, q


@njit(cache=True)
def _dec(buf, p, end, pow10, neg_ok=False):
    """Decimal inside quotes starting after the opening quote: (value, position after closing quote).

    Accepts a subset of numbers.DECIMAL_RE (SIGNED_DECIMAL_RE with `neg_ok`): at most 15 digits.
    """
    neg = False
    if p < end and buf[p] == 45:
        if not neg_ok:
            return 0.0, -1
        neg = True
        p += 1
    m = 0
    nd = 0
    frac = -1
    q = p
    while q < end:
        c = buf[q]
        if 48 <= c <= 57:
            m = m * 10 + (c - 48)
            nd += 1
            if frac >= 0:
                frac += 1
        elif c == 46 and frac < 0 and nd > 0:
            frac = 0
        else:
            break
        q += 1
    if nd == 0 or nd > 15 or q >= end or buf[q] != 34 or frac == 0:
        return 0.0, -1
    v = m / pow10[frac] if frac > 0 else float(m)
    return (-v if neg else v), q + 1


@njit(cache=True)
def _levels(buf, p, end, pow10, lev, nlev):
    """Parse '["px","qty"],...' up to (not including) the closing ']'; returns (pos, count) or (-1, 0)."""
    count = 0
    if p < end and buf[p] == 93:
        return p, 0
    while True:
        if p + 2 > end or buf[p] != 91 or buf[p + 1] != 34:
            return -1, 0
        px, p = _dec(buf, p + 2, end, pow10)
        if p < 0 or p + 2 > end or buf[p] != 44 or buf[p + 1] != 34:
            return -1, 0
        qty, p = _dec(buf, p + 2, end, pow10)
        if p < 0 or p >= end or buf[p] != 93:
            return -1, 0
        p += 1
        if nlev + count >= lev.shape[0]:
            return -1, 0
        lev[nlev + count, 0] = px
        lev[nlev + count, 1] = qty
        count += 1
        if p < end and buf[p] == 44:
            p += 1
            continue
        return p, count


@njit(cache=True)
def scan(buf, sym, sym_lower, pow10):  # noqa: C901 - one grammar, read top to bottom
    """Parse every canonical line of a capture; returns per-line kind/local ts and per-kind columns.

    `sym` is the symbol as in the "s" field, `sym_lower` as in the stream name (bytes as uint8).
    """
    nl = 1
    for i in range(buf.shape[0]):
        if buf[i] == 10:
            nl += 1
    cap_lev = 0
    for i in range(buf.shape[0]):
        if buf[i] == 91:
            cap_lev += 1
    kind = np.zeros(nl, np.int8)
    local = np.zeros(nl, np.int64)
    # depth: line, T, U, u, pu, nbid, nask, level offset
    dep = np.zeros((nl, 8), np.int64)
    lev = np.zeros((cap_lev, 2), np.float64)
    # bbo: line, T, u | b, B, a, A
    bi = np.zeros((nl, 3), np.int64)
    bf = np.zeros((nl, 4), np.float64)
    # trade: line, T, t, sell | p, q
    ti = np.zeros((nl, 4), np.int64)
    tf = np.zeros((nl, 2), np.float64)
    # mark: line, E, T | p, i, r
    mi = np.zeros((nl, 3), np.int64)
    mf = np.zeros((nl, 3), np.float64)
    nd = nb = nt = nm = nlev = 0
    start = 0
    line = 0
    n = buf.shape[0]
    while start < n:
        end = start
        while end < n and buf[end] != 10:
            end += 1
        ts, p = _int(buf, start, end)
        if p > 0 and p < end and buf[p] == 32:
            local[line] = ts
            p = _expect(buf, p + 1, end, L_HEAD)
            # The stream name names the symbol too ("btcusdt@depth@0ms"): it must be ours.
            p = _expect(buf, p, end, sym_lower) if p > 0 else -1
            if p > 0 and p < end and buf[p] == 64:
                # The rest of the name: printable ASCII without escapes, or orjson must judge it.
                while p < end and buf[p] != 34 and 32 < buf[p] < 127 and buf[p] != 92:
                    p += 1
                p = _expect(buf, p, end, L_DATA)
            else:
                p = -1
            if p > 0:
                q = _expect(buf, p, end, L_DEPTH)
                if q > 0:
                    e_, q = _int(buf, q, end)
                    q = _expect(buf, q, end, L_T) if q > 0 else -1
                    t_, q = _int(buf, q, end) if q > 0 else (0, -1)
                    q = _expect(buf, q, end, L_S) if q > 0 else -1
                    q = _expect(buf, q, end, sym) if q > 0 else -1
                    q = _expect(buf, q, end, L_U1) if q > 0 else -1
                    u1, q = _int(buf, q, end) if q > 0 else (0, -1)
                    q = _expect(buf, q, end, L_U2) if q > 0 else -1
                    u2, q = _int(buf, q, end) if q > 0 else (0, -1)
                    q = _expect(buf, q, end, L_PU) if q > 0 else -1
                    pu, q = _int(buf, q, end) if q > 0 else (0, -1)
                    q = _expect(buf, q, end, L_B) if q > 0 else -1
                    q, cb = _levels(buf, q, end, pow10, lev, nlev) if q > 0 else (-1, 0)
                    q = _expect(buf, q, end, L_A) if q > 0 else -1
                    q, ca = _levels(buf, q, end, pow10, lev, nlev + cb) if q > 0 else (-1, 0)
                    q = _expect(buf, q, end, L_END_DEPTH) if q > 0 else -1
                    if q == end:
                        kind[line] = DEPTH
                        dep[nd, 0] = line
                        dep[nd, 1] = t_
                        dep[nd, 2] = u1
                        dep[nd, 3] = u2
                        dep[nd, 4] = pu
                        dep[nd, 5] = cb
                        dep[nd, 6] = ca
                        dep[nd, 7] = nlev
                        nlev += cb + ca
                        nd += 1
                else:
                    q = _expect(buf, p, end, L_BBO)
                    if q > 0:
                        u_, q = _int(buf, q, end)
                        q = _expect(buf, q, end, L_S) if q > 0 else -1
                        q = _expect(buf, q, end, sym) if q > 0 else -1
                        q = _expect(buf, q, end, L_QB) if q > 0 else -1
                        b_, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                        q = _expect(buf, q - 1, end, L_QBQ) if q > 0 else -1
                        bq, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                        q = _expect(buf, q - 1, end, L_QA) if q > 0 else -1
                        a_, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                        q = _expect(buf, q - 1, end, L_QAQ) if q > 0 else -1
                        aq, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                        q = _expect(buf, q - 1, end, L_QT) if q > 0 else -1
                        t_, q = _int(buf, q, end) if q > 0 else (0, -1)
                        q = _expect(buf, q, end, L_E) if q > 0 else -1
                        e_, q = _int(buf, q, end) if q > 0 else (0, -1)
                        q = _expect(buf, q, end, L_END) if q > 0 else -1
                        if q == end:
                            kind[line] = BBO
                            bi[nb, 0] = line
                            bi[nb, 1] = t_
                            bi[nb, 2] = u_
                            bf[nb, 0] = b_
                            bf[nb, 1] = bq
                            bf[nb, 2] = a_
                            bf[nb, 3] = aq
                            nb += 1
                    else:
                        q = _expect(buf, p, end, L_TRADE)
                        if q > 0:
                            e_, q = _int(buf, q, end)
                            q = _expect(buf, q, end, L_T) if q > 0 else -1
                            t_, q = _int(buf, q, end) if q > 0 else (0, -1)
                            q = _expect(buf, q, end, L_S) if q > 0 else -1
                            q = _expect(buf, q, end, sym) if q > 0 else -1
                            q = _expect(buf, q, end, L_TT) if q > 0 else -1
                            tid, q = _int(buf, q, end) if q > 0 else (0, -1)
                            q = _expect(buf, q, end, L_TP) if q > 0 else -1
                            px, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                            q = _expect(buf, q - 1, end, L_TQ) if q > 0 else -1
                            qty, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                            q = _expect(buf, q - 1, end, L_TX) if q > 0 else -1
                            sell = -1
                            if q > 0:
                                r = _expect(buf, q, end, L_TRUE)
                                if r > 0:
                                    sell, q = 1, r
                                else:
                                    r = _expect(buf, q, end, L_FALSE)
                                    sell, q = (0, r) if r > 0 else (-1, -1)
                            q = _expect(buf, q, end, L_END) if q > 0 else -1
                            if q == end and sell >= 0:
                                kind[line] = TRADE
                                ti[nt, 0] = line
                                ti[nt, 1] = t_
                                ti[nt, 2] = tid
                                ti[nt, 3] = sell
                                tf[nt, 0] = px
                                tf[nt, 1] = qty
                                nt += 1
                        else:
                            q = _expect(buf, p, end, L_MARK)
                            if q > 0:
                                e_, q = _int(buf, q, end)
                                q = _expect(buf, q, end, L_S) if q > 0 else -1
                                q = _expect(buf, q, end, sym) if q > 0 else -1
                                q = _expect(buf, q, end, L_MP) if q > 0 else -1
                                mp, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                                q = _expect(buf, q - 1, end, L_MPP) if q > 0 else -1
                                _, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                                q = _expect(buf, q - 1, end, L_MI) if q > 0 else -1
                                ip, q = _dec(buf, q, end, pow10) if q > 0 else (0.0, -1)
                                q = _expect(buf, q - 1, end, L_MR) if q > 0 else -1
                                rr, q = _dec(buf, q, end, pow10, True) if q > 0 else (0.0, -1)
                                q = _expect(buf, q - 1, end, L_QT) if q > 0 else -1
                                t_, q = _int(buf, q, end) if q > 0 else (0, -1)
                                q = _expect(buf, q, end, L_END) if q > 0 else -1
                                if q == end:
                                    kind[line] = MARK
                                    mi[nm, 0] = line
                                    mi[nm, 1] = e_
                                    mi[nm, 2] = t_
                                    mf[nm, 0] = mp
                                    mf[nm, 1] = ip
                                    mf[nm, 2] = rr
                                    nm += 1
        line += 1
        start = end + 1
    return (
        kind[:line],
        local[:line],
        dep[:nd],
        lev[:nlev],
        bi[:nb],
        bf[:nb],
        ti[:nt],
        tf[:nt],
        mi[:nm],
        mf[:nm],
    )
