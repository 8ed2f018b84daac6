"""ReasoningCodec (reasoning text ↔ authenticated `encrypted_content`) and the ReasoningCache fallback."""

from __future__ import annotations

import base64
import threading

import pytest

from deepseek_proxy.translate.reasoning import VERSION, ReasoningCache, ReasoningCodec

SECRET = b"unit-test-secret"
TEXTS = ["", "short", "RAW THINKING: the user wants a file; call the tool.", "é 😀 中文\n\t\"quotes\"", "x" * 100_000]


@pytest.mark.parametrize("text", TEXTS, ids=["empty", "short", "sentence", "unicode", "long"])
def test_round_trip(text):
    codec = ReasoningCodec(SECRET)
    assert codec.decode(codec.encode(text)) == text


def test_blob_is_versioned_and_opaque():
    blob = ReasoningCodec(SECRET).encode("the secret plan")
    version, payload, tag = blob.split(".")
    assert version == VERSION == "dsp1"
    assert "secret plan" not in blob  # not plain text (compressed)
    for part in (payload, tag):
        assert set(part) <= set(B64URL)  # url-safe, no "=" padding


def test_deterministic_same_text_same_blob():
    # No random nonce: the replayed history must stay byte-identical for the upstream's prefix cache.
    assert ReasoningCodec(SECRET).encode("same") == ReasoningCodec(SECRET).encode("same")
    assert ReasoningCodec(SECRET).encode("same") != ReasoningCodec(SECRET).encode("other")


def test_long_reasoning_is_compressed():
    assert len(ReasoningCodec(SECRET).encode("thinking " * 10_000)) < 2_000


def test_other_secret_is_rejected():
    blob = ReasoningCodec(SECRET).encode("text")
    assert ReasoningCodec(b"another secret").decode(blob) is None


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip(text: str, index: int) -> str:
    """Change the top bit of one base64 digit: always a data bit, so the decoded bytes really change."""
    return text[:index] + B64URL[B64URL.index(text[index]) ^ 0b100000] + text[index + 1:]


def test_any_tampered_character_is_rejected():
    codec = ReasoningCodec(SECRET)
    blob = codec.encode("do the thing")
    prefix = len(VERSION) + 1
    for index in range(prefix, len(blob)):
        if blob[index] == ".":
            continue
        tampered = flip(blob, index)
        assert codec.decode(tampered) is None, index


def test_forged_payload_with_recomputed_layout_is_rejected():
    import zlib

    codec = ReasoningCodec(SECRET)
    _, _, tag = codec.encode("original").split(".")
    forged_payload = base64.urlsafe_b64encode(zlib.compress(b"forged")).rstrip(b"=").decode()
    assert codec.decode(f"{VERSION}.{forged_payload}.{tag}") is None


@pytest.mark.parametrize(
    "blob",
    [
        None,
        "",
        42,
        "gAAAAABmockEncryptedReasoning_e4d07a78ab874259874d4436afee2023",  # an OpenAI-style blob (fixtures)
        "dsp1.",
        "dsp1..",
        "dsp1.a.b.c",
        "dsp1.!!!.???",
        "dsp2.abc.def",
    ],
)
def test_foreign_or_malformed_blobs_are_none(blob):
    assert ReasoningCodec(SECRET).decode(blob) is None


def test_other_version_with_valid_tag_is_rejected():
    # The version is part of what the tag authenticates: relabelling a blob does not make it valid.
    codec = ReasoningCodec(SECRET)
    blob = codec.encode("text")
    assert codec.decode("dsp2" + blob[len(VERSION):]) is None


def test_empty_secret_is_refused():
    with pytest.raises(ValueError):
        ReasoningCodec(b"")


# ---- cache ---------------------------------------------------------------------------------------------------


def test_cache_put_get():
    cache = ReasoningCache()
    assert cache.get("call_1") is None
    cache.put("call_1", "because")
    assert cache.get("call_1") == "because"
    cache.put("call_1", "updated")
    assert cache.get("call_1") == "updated"
    assert len(cache) == 1


def test_cache_is_bounded_and_evicts_the_oldest():
    cache = ReasoningCache(max_entries=3)
    for i in range(5):
        cache.put(f"c{i}", str(i))
    assert len(cache) == 3
    assert [cache.get(f"c{i}") for i in range(5)] == [None, None, "2", "3", "4"]


def test_cache_evicts_least_recently_used_not_least_recently_inserted():
    cache = ReasoningCache(max_entries=2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # "a" is now the most recently used
    cache.put("c", "C")
    assert cache.get("b") is None
    assert cache.get("a") == "A" and cache.get("c") == "C"


def test_cache_put_refreshes_recency():
    cache = ReasoningCache(max_entries=2)
    cache.put("a", "A")
    cache.put("b", "B")
    cache.put("a", "A2")
    cache.put("c", "C")
    assert cache.get("b") is None and cache.get("a") == "A2"


def test_cache_is_thread_safe_under_concurrent_puts():
    cache = ReasoningCache(max_entries=100)

    def writer(n: int) -> None:
        for i in range(2_000):
            cache.put(f"{n}-{i}", "r")
            cache.get(f"{n}-{i // 2}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 100
