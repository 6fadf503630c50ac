"""Random inputs for the randomized tests, and the oracles that judge them.

The generators lean towards the edges the hub's rules are made of (iothub-
mqtt5.md §7 twin limits, the methods and C2D limits of service-rest.md):
keys that are empty, too long or hold '.', '$', ' ' or control characters;
strings around 4 KB; integers around ±(2^52 - 1) and past 64 bits; depth
around 10 levels; sections around their size limit. Bodies are valid JSON
most of the time so that the rules behind the parser are reached, and
broken JSON or not UTF-8 the rest of the time.

`strict_json` is what jansson (json_loadb, flags 0) makes of a body, so a
test can tell in advance whether the hub must accept or refuse it. It is
stricter than Python's json module where jansson is: no NaN or Infinity, no
NUL in strings, no lone surrogates, integers within int64, finite reals.
`unsigned_decimal` reads a u32 or u64 property as the hub does, and
`method_reply_result` is what a direct method's caller gets for a reply.

Everything takes a random.Random so that a failure replays from its seed.
"""

import datetime
import json
import math

INVALID = object()  # strict_json's answer for a body jansson refuses

TWIN_KEY_MAX = 1024
TWIN_STRING_MAX = 4096
TWIN_INT_MAX = 4503599627370495
TWIN_DEPTH_MAX = 10
TWIN_TAGS_MAX = 8 * 1024
TWIN_PROPERTIES_MAX = 32 * 1024
METHOD_PAYLOAD_MAX = 128 * 1024
U32_MAX = 2 ** 32 - 1
U64_MAX = 2 ** 64 - 1

# Few keys, so that patches overlap and nulls remove what earlier ones set.
PLAIN_KEYS = ["a", "b", "c", "temp", "ü", "k-1", "_x"]
EDGE_KEYS = ["", "a.b", "$x", "a b", "tab\t", "del\x7f", "k" * TWIN_KEY_MAX, "k" * (TWIN_KEY_MAX + 1),
             "é" * (TWIN_KEY_MAX // 2), "é" * (TWIN_KEY_MAX // 2) + "x"]
EDGE_INTS = [0, -1, 1, TWIN_INT_MAX, -TWIN_INT_MAX, TWIN_INT_MAX + 1, -TWIN_INT_MAX - 1,
             2 ** 63 - 1, -2 ** 63, 2 ** 64]
EDGE_STRINGS = ["", "x" * TWIN_STRING_MAX, "x" * (TWIN_STRING_MAX + 1), "é" * (TWIN_STRING_MAX // 2),
                "é" * (TWIN_STRING_MAX // 2) + "x", "line\nbreak", "quote\"back\\slash",
                "nul\x00", "\ud800", "emoji \U0001F600", "\u2028"]


def random_key(rng):
    return rng.choice(EDGE_KEYS) if rng.random() < 0.06 else rng.choice(PLAIN_KEYS)


def random_scalar(rng):
    r = rng.random()
    if r < 0.15:
        return None
    if r < 0.25:
        return rng.random() < 0.5
    if r < 0.45:
        return rng.choice(EDGE_INTS) if rng.random() < 0.3 else rng.randint(-1000, 1000)
    if r < 0.55:
        return rng.choice([0.5, -1.25, 1e300, 3.0, 1e-300])
    if rng.random() < 0.2:
        return rng.choice(EDGE_STRINGS)
    return "".join(rng.choice("abcxyz é€\"\\/") for _ in range(rng.randint(0, 12)))


def random_value(rng, depth=0, max_depth=4):
    """A JSON-able value; containers become rarer with depth."""
    r = rng.random()
    if depth >= max_depth or r < 0.55:
        return random_scalar(rng)
    if r < 0.85:
        return {random_key(rng): random_value(rng, depth + 1, max_depth)
                for _ in range(rng.randint(0, 4))}
    return [random_value(rng, depth + 1, max_depth) for _ in range(rng.randint(0, 4))]


def nested(depth, leaf=1):
    """{"a":{"a":...leaf}} with `depth` objects below the one returned."""
    v = leaf
    for _ in range(depth):
        v = {"a": v}
    return v


def random_section(rng):
    """A twin section patch: mostly small objects, sometimes an edge case."""
    r = rng.random()
    if r < 0.05:  # containers nested around the limit (10 below the section)
        return {"deep": nested(rng.randint(TWIN_DEPTH_MAX - 2, TWIN_DEPTH_MAX + 1))}
    if r < 0.10:  # a section around its size limit
        n = rng.choice([7, 8, 9, 31, 32, 33])
        return {"big%d" % i: "x" * 1000 for i in range(n)}
    if r < 0.13:
        return rng.choice([[], "text", 7, None])
    return {random_key(rng): random_value(rng) for _ in range(rng.randint(0, 4))}


def dumps(rng, value):
    """JSON text of value as bytes, in one of several spellings."""
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5,
                      separators=rng.choice([(",", ":"), (", ", ": ")]))
    return text.encode("utf-8", "surrogatepass")


def mutate_bytes(rng, data):
    """A few byte-level edits: truncation, a flipped or inserted byte, a
    duplicated span, invalid UTF-8."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        pos = rng.randint(0, len(data))
        if op == 0:
            del data[pos:]
        elif op == 1 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 2:
            data[pos:pos] = bytes([rng.choice(b'{}[]",:\\\x00\xff\xc3 0e-')])
        elif op == 3:
            span = bytes(data[pos:pos + rng.randint(1, 8)])
            data[pos:pos] = span
        else:
            data[pos:pos] = rng.choice([b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"NaN"])
    return bytes(data)


def body_of(rng, value, p_mutate=0.15):
    """value as a request body, mutated with probability p_mutate."""
    data = dumps(rng, value)
    return mutate_bytes(rng, data) if rng.random() < p_mutate else data


# ------------------------------------------------------------ oracles
def _reject_constant(name):
    raise ValueError("not JSON: " + name)


def _jansson_string_ok(s, allow_nul=False):
    return (allow_nul or "\x00" not in s) and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in s)


def _jansson_value_ok(v, ints_as_reals, allow_nul):
    if isinstance(v, str):
        return _jansson_string_ok(v, allow_nul)
    if isinstance(v, bool) or v is None:
        return True
    if isinstance(v, int):
        return abs(v) < 1.7e308 if ints_as_reals else -2 ** 63 <= v <= 2 ** 63 - 1
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(_jansson_value_ok(x, ints_as_reals, allow_nul) for x in v)
    return all(_jansson_string_ok(k) and _jansson_value_ok(x, ints_as_reals, allow_nul)
               for k, x in v.items())


def strict_json(body, ints_as_reals=False, allow_nul=False):
    """The value jansson's json_loadb(body, flags 0) yields, or INVALID.
    Duplicate keys: the last one wins, as in jansson, but the value it
    replaces must be JSON too. ints_as_reals: with
    JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL (any top-level value,
    integers of any size that a double can hold). allow_nul: with
    JSON_ALLOW_NUL ("\u0000" in string values; never in keys). A raw NUL
    byte is never JSON (util/json_load.h)."""
    def pairs(items):  # every member, also one a later duplicate replaces
        if not all(_jansson_string_ok(k) and _jansson_value_ok(v, ints_as_reals, allow_nul)
                   for k, v in items):
            raise ValueError("jansson refuses a member")
        return dict(items)
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant,
                           object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return INVALID
    return value if _jansson_value_ok(value, ints_as_reals, allow_nul) else INVALID


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch; returns a new value."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def twin_patch_problem(patch):
    """Why the hub must refuse this section patch under the §7 per-value
    limits (keys, depth, strings, integers), or None. Depth as the hub
    counts it: a container directly in the section has depth 1, and
    containers may go TWIN_DEPTH_MAX deep."""
    def walk(v, depth):
        if isinstance(v, (dict, list)) and depth > TWIN_DEPTH_MAX:
            return "too deep"
        if isinstance(v, dict):
            for k, x in v.items():
                kb = k.encode()
                if not kb or len(kb) > TWIN_KEY_MAX:
                    return "key length"
                if any(c < 0x20 or c == 0x7F or c in b".$ " for c in kb):
                    return "key character"
                why = walk(x, depth + 1)
                if why:
                    return why
        elif isinstance(v, list):
            for x in v:
                why = walk(x, depth + 1)
                if why:
                    return why
        elif isinstance(v, str):
            if len(v.encode()) > TWIN_STRING_MAX:
                return "string length"
        elif isinstance(v, int) and not isinstance(v, bool):
            if abs(v) > TWIN_INT_MAX:
                return "integer range"
        return None
    if not isinstance(patch, dict):
        return "not an object"
    return walk(patch, 0)


def twin_size(v):
    """The §7 size: key and string bytes, numbers 8, booleans and nulls 4."""
    if isinstance(v, dict):
        return sum(len(k.encode()) + twin_size(x) for k, x in v.items())
    if isinstance(v, list):
        return sum(twin_size(x) for x in v)
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, bool) or v is None:
        return 4
    return 8


def unsigned_decimal(text, limit=U64_MAX):
    """A u32 or u64 property (iothub-mqtt5.md §5: unsigned decimal) as the
    hub reads it: 1 to 20 ASCII digits, leading zeros allowed, at most
    `limit`; None for anything else ("+5", " 5", "5 ", "", "1e3", "١")."""
    if 1 <= len(text) <= 20 and all("0" <= c <= "9" for c in text) and int(text) <= limit:
        return int(text)
    return None


def method_reply_result(codes, payload):
    """What the caller of a direct method gets for the device's reply, as
    (HTTP status, JSON body or None). codes: the reply's response-code
    values in order; the hub reads the first. No u32 there, a payload over
    128 KB, or one that is neither JSON nor UTF-8 text: 502. Otherwise 200
    with the payload as JSON (flags JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL
    | JSON_ALLOW_NUL: a key holding "\u0000" is still not JSON), as a string
    when it is other UTF-8 text, or null when it is empty."""
    code = unsigned_decimal(codes[0], U32_MAX) if codes else None
    if code is None or len(payload) > METHOD_PAYLOAD_MAX:
        return 502, None
    value = None
    if payload:
        value = strict_json(payload, ints_as_reals=True, allow_nul=True)
    if value is INVALID:
        try:
            value = payload.decode("utf-8")
        except UnicodeDecodeError:
            return 502, None
    return 200, {"status": code, "payload": value}


def iso_ms(ms):
    """ms since the epoch as the hub's ISO 8601 stamp (to year 9999)."""
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)
