"""Reading a release directory, on a small hand-written one: parsing, cache, bad releases."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.matching.adapters.hla_release import ReleaseError, load_release
from services.matching.tests.test_kir_ligand_rules import LEADER, TEMPLATE, mature

HEADER = "# file: {}\n# version: IPD-IMGT/HLA 9.99.0\n"


def full(**residues: str) -> str:
    return LEADER + mature(**residues)


def write_release(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    fasta = {
        "A": {"A*24:02:01:01": full(r80="I", r82="L", r83="R"),
              "A*24:04": full(r76="A", r80="T"), "A*11:01:01:01": full()},
        "B": {"B*46:01:01": full(r76="V", r80="N"), "B*07:02:01": full(r76="E")},
        "C": {"C*03:04:01:01": full(r80="N"), "C*03:07": mature(r80="K")[1:181],
              "C*03:05N": full(r80="N")},
    }  # fmt: skip
    for locus, alleles in fasta.items():
        (root / f"{locus}_prot.fasta").write_text(
            "".join(
                f">HLA:HLA{i:05d} {n} {len(s)} bp\n{s}\n"
                for i, (n, s) in enumerate(alleles.items())
            )
        )
    names = [n for alleles in fasta.values() for n in alleles] + ["DRB1*15:01:01:01"]
    (root / "Allelelist.txt").write_text(
        HEADER.format("Allelelist.txt") + "AlleleID,Allele\n"
        + "".join(f"HLA{i:05d},{n}\n" for i, n in enumerate(names))
    )  # fmt: skip
    (root / "Deleted_alleles.txt").write_text(
        "AlleleID,Allele,Description\nHLA99999,C*0307,Sequence renamed C*03:07 (May 2000)\n"
    )
    (root / "hla_nom_g.txt").write_text("C*;03:04:01:01/03:05N;03:04:01G\n")
    (root / "hla_nom_p.txt").write_text("C*;03:04:01:01;03:04P\n")
    (root / "release_version.txt").write_text("# version: IPD-IMGT/HLA 9.99.0\n")
    return root


def test_a_release_directory_is_read_classified_and_cached(tmp_path):
    release, cache = write_release(tmp_path / "release"), tmp_path / "cache"
    reference = load_release(release, cache_dir=cache)
    assert reference.version == "ipd-imgt-hla-9.99.0"
    assert {n: reference.classify(n) for n in ("A*24:02", "A*24:04", "A*11:01", "B*46:01",
            "B*07:02", "C*03:04", "C*03:07", "C*03", "C*03:05N", "C*03:04:01G", "C*03:04P",
            "DRB1*15:01")} == {
        "A*24:02": "Bw4-80I", "A*24:04": "none", "A*11:01": "A3/A11", "B*46:01": "C1",
        "B*07:02": "none", "C*03:04": "C1", "C*03:07": "C2", "C*03": "ambiguous",
        "C*03:05N": "not-expressed", "C*03:04:01G": "C1", "C*03:04P": "C1", "DRB1*15:01": "none",
    }  # fmt: skip
    assert len(list(cache.glob("*.json"))) == 1
    assert load_release(release, cache_dir=cache).classes == reference.classes


def test_a_changed_file_is_classified_anew(tmp_path):
    release, cache = write_release(tmp_path), tmp_path / "cache"
    before = load_release(release, cache_dir=cache)
    fasta = (
        (release / "C_prot.fasta")
        .read_text()
        .replace(mature(r80="K")[1:181], mature(r80="N")[1:181])
    )
    (release / "C_prot.fasta").write_text(fasta)
    after = load_release(release, cache_dir=cache)
    assert (before.classify("C*03:07"), after.classify("C*03:07")) == ("C2", "C1")
    assert before.checksums["C_prot.fasta"] != after.checksums["C_prot.fasta"]


def test_a_directory_without_a_release_is_refused_naming_the_file(tmp_path):
    (tmp_path / "A_prot.fasta").write_text(">HLA:HLA00001 A*01:01:01:01 365 bp\nMAVM\n")
    with pytest.raises(ReleaseError, match=r"B_prot\.fasta is missing"):
        load_release(tmp_path, cache_dir=None)


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("Allelelist.txt", "AlleleID,Allele\nHLA00001,not-a-name\n"),
        ("C_prot.fasta", b"\xff\xfe garbage"),
        ("C_prot.fasta", ">HLA:HLA00001\nMAVM\n"),
        ("release_version.txt", "nothing here\n"),
    ],
    ids=["bad name", "not text", "header without name", "no version"],
)
def test_a_malformed_release_is_a_release_error_not_a_crash(tmp_path, file, content):
    release = write_release(tmp_path)
    path = release / file
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(ReleaseError):
        load_release(release, cache_dir=None)


def test_an_unwritable_cache_is_only_a_warning(tmp_path, caplog):
    release = write_release(tmp_path / "r")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    assert load_release(release, cache_dir=blocked / "cache").release == "9.99.0"
    assert any("not cached" in r.getMessage() for r in caplog.records)


def test_the_template_is_long_enough_to_align():
    assert len(TEMPLATE) >= 180
