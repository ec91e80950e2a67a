"""Re-signing URLs built under an expired signature (pure: instarec.signing)."""

from __future__ import annotations

from instarec.signing import SignedLocation, learn

CDN = "https://cdn.example.test"


def test_a_query_token_moves_to_every_address_that_carried_it() -> None:
    location = SignedLocation(f"{CDN}/live/42/manifest.mpd?sig=aaa&exp=1000")
    location.renew(f"{CDN}/live/42/manifest.mpd?sig=bbb&exp=2000")
    assert location.generation == 1
    # An address inheriting the manifest's query, one with a parameter of its own besides the
    # token, and one whose token items come in another order.
    assert (
        location.sign(f"{CDN}/live/42/media/v1/t100.m4s?sig=aaa&exp=1000")
        == f"{CDN}/live/42/media/v1/t100.m4s?sig=bbb&exp=2000"
    )
    assert (
        location.sign(f"{CDN}/live/42/media/v1/t100.m4s?range=7&exp=1000&sig=aaa")
        == f"{CDN}/live/42/media/v1/t100.m4s?range=7&exp=2000&sig=bbb"
    )


def test_addresses_signed_otherwise_or_not_at_all_are_left_alone() -> None:
    location = SignedLocation(f"{CDN}/live/manifest.mpd?sig=aaa&exp=1000")
    location.renew(f"{CDN}/live/manifest.mpd?sig=bbb&exp=2000")
    for url in (
        f"{CDN}/live/media/t1.m4s",
        f"{CDN}/live/media/t1.m4s?sig=zzz&exp=999",
        "https://time.example.test/now?sig=other",
    ):
        assert location.sign(url) == url


def test_a_fresh_query_with_a_new_parameter_adds_it_to_the_signed_addresses() -> None:
    location = SignedLocation(f"{CDN}/m.mpd?sig=aaa&exp=1000")
    location.renew(f"{CDN}/m.mpd?sig=bbb&exp=2000&kid=7")
    assert (
        location.sign(f"{CDN}/v/1.m4s?sig=aaa&exp=1000") == f"{CDN}/v/1.m4s?sig=bbb&exp=2000&kid=7"
    )
    assert location.sign(f"{CDN}/v/1.m4s?exp=1000&n=1") == f"{CDN}/v/1.m4s?exp=2000&n=1&kid=7"


def test_a_token_in_the_path_and_another_host_move_the_base() -> None:
    location = SignedLocation("https://edge1.example.test/tok=AAA/live/42/dash/42.mpd")
    location.renew("https://edge2.example.test/tok=BBB/live/42/dash/42.mpd")
    # Addresses beside the manifest and above it (Instagram's '../' templates) both move.
    assert (
        location.sign("https://edge1.example.test/tok=AAA/live/42/live-hd-v/42_0-1000.m4v")
        == "https://edge2.example.test/tok=BBB/live/42/live-hd-v/42_0-1000.m4v"
    )
    assert location.sign("https://other.example.test/tok=AAA/x.m4s") == (
        "https://other.example.test/tok=AAA/x.m4s"
    )


def test_per_representation_signatures_are_learned_from_the_representations() -> None:
    # Instagram signs each representation's addresses with their own oh; oe is shared.
    location = SignedLocation(f"{CDN}/live/42/dash/42.mpd?oh=M1&oe=E1")
    video_old = f"{CDN}/live/42/live-hd-v/42_0-0.m4v?oh=V1&oe=E1"
    video_new = f"{CDN}/live/42/live-hd-v/42_0-0.m4v?oh=V2&oe=E2"
    location.renew(f"{CDN}/live/42/dash/42.mpd?oh=M2&oe=E2", [(video_old, video_new)])
    assert location.sign(f"{CDN}/live/42/live-hd-v/42_0-5005.m4v?oh=V1&oe=E1") == (
        f"{CDN}/live/42/live-hd-v/42_0-5005.m4v?oh=V2&oe=E2"
    )


def test_a_renamed_representation_moves_its_queued_addresses() -> None:
    location = SignedLocation(f"{CDN}/live/m.mpd?sig=a")
    location.renew(
        f"{CDN}/live/m.mpd?sig=b",
        [(f"{CDN}/live/media/v1/t0.m4s?sig=a", f"{CDN}/live/media/v720/t0.m4s?sig=b")],
    )
    assert location.sign(f"{CDN}/live/media/v1/t4000.m4s?sig=a") == (
        f"{CDN}/live/media/v720/t4000.m4s?sig=b"
    )
    assert location.sign(f"{CDN}/live/media/a1/t4000.m4s?sig=a") == (
        f"{CDN}/live/media/a1/t4000.m4s?sig=b"
    )


def test_an_address_signed_generations_ago_reads_under_the_newest_signature() -> None:
    location = SignedLocation(f"{CDN}/m.mpd?sig=a&exp=1")
    location.renew(f"{CDN}/m.mpd?sig=b&exp=2")
    location.renew(f"{CDN}/m.mpd?sig=c&exp=3")
    assert location.generation == 2
    for old in ("sig=a&exp=1", "sig=b&exp=2", "sig=c&exp=3"):
        assert location.sign(f"{CDN}/v/9.m4s?{old}") == f"{CDN}/v/9.m4s?sig=c&exp=3"
    assert location.manifest_url == f"{CDN}/m.mpd?sig=c&exp=3"


def test_signed_queries_are_kept_byte_for_byte() -> None:
    old = f"{CDN}/m.mpd?sig=a%2Fb%3D%3D&exp=1"
    new = f"{CDN}/m.mpd?sig=c%2Bd%3D&exp=2"
    location = SignedLocation(old)
    location.renew(new)
    assert location.sign(f"{CDN}/v.m4s?sig=a%2Fb%3D%3D&exp=1#frag") == (
        f"{CDN}/v.m4s?sig=c%2Bd%3D&exp=2#frag"
    )


def test_nothing_is_learned_from_equal_urls_and_a_moved_manifest_is_no_signature() -> None:
    assert learn(f"{CDN}/m.mpd?sig=a", f"{CDN}/m.mpd?sig=a") is None
    location = SignedLocation(f"{CDN}/m.mpd?sig=a")
    location.moved(f"{CDN}/elsewhere/m.mpd?sig=a")
    assert location.generation == 0
    assert location.manifest_url == f"{CDN}/elsewhere/m.mpd?sig=a"
    assert location.sign(f"{CDN}/v.m4s?sig=a") == f"{CDN}/v.m4s?sig=a"
