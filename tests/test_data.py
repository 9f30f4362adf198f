import gzip
from collections import Counter, defaultdict

import pytest

from bench.data import (
    USER_SUBSETS,
    DataFormatError,
    DatasetNotFound,
    build_dataset,
    k_core,
    leave_one_out,
    load_dataset,
    locate,
    read_interactions,
)
from bench.data.synthetic import synthetic_dataset


def _write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def test_user_lines(tmp_path):
    path = _write(tmp_path / "x.txt.gz", "1 5 6 7\n2 6 8\n", gz=True)
    assert read_interactions(path, "user_lines") == {"1": ["5", "6", "7"], "2": ["6", "8"]}


def test_user_item_pairs_keep_file_order(tmp_path):
    path = _write(tmp_path / "p.txt", "1 9\n2 3\n1 4\n")
    assert read_interactions(path, "user_item_pairs") == {"1": ["9", "4"], "2": ["3"]}


def test_recbole_inter_sorted_by_time_ties_keep_file_order(tmp_path):
    text = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t300\n1\t11\t3\t100\n1\t12\t4\t100\n2\t10\t1\t5\n"
    )
    path = _write(tmp_path / "d.inter", text)
    assert read_interactions(path, "recbole_inter") == {"1": ["11", "12", "10"], "2": ["10"]}


def test_movielens_dat_and_udata(tmp_path):
    dat = _write(tmp_path / "ratings.dat", "1::20::5::30\n1::10::3::10\n")
    assert read_interactions(dat, "movielens_dat") == {"1": ["10", "20"]}
    udata = _write(tmp_path / "u.data", "7\t3\t4\t99\n7\t2\t4\t98\n")
    assert read_interactions(udata, "movielens_udata") == {"7": ["2", "3"]}


def test_checkins_sorted_by_time(tmp_path):
    path = _write(tmp_path / "c.txt", "0\t5\t1287503727.0\n0\t6\t1287411463.0\n")
    assert read_interactions(path, "checkins") == {"0": ["6", "5"]}


@pytest.mark.parametrize(
    "fmt,text,message",
    [
        ("user_lines", "1 2 3\n4\n", r"x:2: expected 'user item1"),
        ("user_lines", "1 2 3\n1 4 5\n", r"x:2: user 1 appears on two lines"),
        ("user_lines", "1 2 a\n", r"x:1: id 'a' is not an integer"),
        ("user_item_pairs", "1 2\n1 2 3\n", r"x:2: expected 'user item', got 3 fields"),
        ("recbole_inter", "user_id:token\titem_id:token\n1\t2\n", r"x:1: RecBole header lacks \['timestamp'\]"),
        (
            "recbole_inter",
            "user_id:token\titem_id:token\ttimestamp:float\n1\t2\n",
            r"x:2: expected 3 tab-separated fields",
        ),
        ("movielens_dat", "1::2::3\n", r"x:1: expected 4 fields"),
        ("checkins", "1\t2\tyesterday\n", r"x:1: timestamp 'yesterday' is not a number"),
        ("user_lines", "\n\n", r"x: no interactions found"),
    ],
)
def test_malformed_files_name_file_line_and_reason(tmp_path, fmt, text, message):
    path = _write(tmp_path / "x", text)
    with pytest.raises(DataFormatError, match=message):
        read_interactions(path, fmt)


def test_remapping_is_dense_and_starts_at_one():
    ds = build_dataset("t", {"b": ["30", "10"], "a": ["10", "20"]})
    assert ds.num_items == 3 and ds.user_ids == ["a", "b"]
    assert ds.sequences == [[1, 2], [3, 1]]
    assert ds.stats()["interactions"] == 4


def test_k_core_is_iterated_until_stable():
    raw = {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c", "d"]}
    kept = k_core(raw, 2)
    # d goes (1 count); u3 keeps a, c; every remaining item has >= 2 and every user >= 2
    assert kept == {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "c"]}
    assert k_core(raw, 3) == {}


def test_the_fingerprint_tells_orders_apart():
    """Two conversions of one dataset can share every statistic and differ in order (ML-1M's timestamp ties)."""
    a = build_dataset("a", {"u1": ["x", "y", "z"], "u2": ["y", "z"]})
    b = build_dataset("b", {"u1": ["y", "x", "z"], "u2": ["y", "z"]})
    same = build_dataset("c", {"u1": ["x", "y", "z"], "u2": ["y", "z"]})
    assert {k: v for k, v in a.stats().items() if k not in ("dataset", "sequences_sha256")} == {
        k: v for k, v in b.stats().items() if k not in ("dataset", "sequences_sha256")
    }
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() == same.fingerprint()
    assert (
        build_dataset("d", {"u1": ["x"], "u2": ["y", "z"]}).fingerprint()
        != build_dataset("e", {"u1": ["x", "y"], "u2": ["z"]}).fingerprint()
    )  # user boundaries count


def test_leave_one_out_split():
    ds = build_dataset("t", {"1": ["1", "2", "3", "4"], "2": ["5", "6"]})
    split = leave_one_out(ds)
    assert split.train == [[1, 2], [5, 6]]
    assert split.valid == [([1, 2], 3)]
    assert split.test == [([1, 2, 3], 4)]


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("LINREC_DATA", str(tmp_path / "env"))
    monkeypatch.setattr("bench.data.files.REPO_ROOT", tmp_path / "repo")
    (tmp_path / "flag").mkdir()
    with pytest.raises(DatasetNotFound) as err:
        locate("ml-1m", tmp_path / "flag")
    text = str(err.value)
    assert "ml-1m/ml-1m_sasrec.txt.gz" in text and "--data-dir" in text and "LINREC_DATA" in text and "default" in text
    # a --data-dir that is not a folder is a mistake, not a reason to look elsewhere
    with pytest.raises(DatasetNotFound, match=r"--data-dir .*typo: no such directory"):
        locate("ml-1m", tmp_path / "typo")
    with pytest.raises(DatasetNotFound, match="unknown dataset 'nope'"):
        locate("nope")


def test_data_dir_flag_wins(tmp_path):
    folder = tmp_path / "mydata" / "lastfm-hetrec"
    folder.mkdir(parents=True)
    _write(folder / "LastFM.txt.gz", "1 1 2 3\n2 2 3 4\n", gz=True)
    ds = load_dataset("lastfm", tmp_path / "mydata")
    assert ds.num_users == 2 and str(tmp_path) in ds.source


def test_a_user_subset_keeps_only_its_users(tmp_path, monkeypatch):
    folder = tmp_path / "lastfm-hetrec"
    folder.mkdir()
    _write(folder / "LastFM.txt.gz", "1 1 2 3\n2 2 3 4\n3 4 5 6\n", gz=True)
    monkeypatch.setitem(USER_SUBSETS, "lastfm-u2", ("lastfm", 2, 3))
    ds = load_dataset("lastfm-u2", tmp_path)
    assert ds.name == "lastfm-u2" and ds.num_users == 2 and ds.sequences == [[1, 2, 3], [3, 4, 5]]


def test_synthetic_is_deterministic_and_structured():
    a, b = synthetic_dataset(50, 60, seed=3), synthetic_dataset(50, 60, seed=3)
    assert a.sequences == b.sequences
    assert all(1 <= i <= 60 for s in a.sequences for i in s)
    assert synthetic_dataset(50, 60, seed=4).sequences != a.sequences


def _shared(name):
    try:
        locate(name)
        return True
    except DatasetNotFound:
        return False


STANDARD_ML_1M_SHA256 = "7c5d534ef3a363c21c424a260fa8e4e0dd0237d8370eb1a250280afbf03fd7dd"  # SASRec's ml-1m.txt, gz


@pytest.mark.skipif(not _shared("ml-1m"), reason="ML-1M not available (set --data-dir / LINREC_DATA)")
def test_ml_1m_is_the_standard_file_and_rows_say_so():
    stats = load_dataset("ml-1m").stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (6040, 3416, 999_611)
    assert stats["file_sha256"] == STANDARD_ML_1M_SHA256 and stats["format"] == "user_item_pairs"
    assert locate("ml-1m")[0].name == "ml-1m_sasrec.txt.gz"


@pytest.mark.skipif(not _shared("ml-1m-diffurec"), reason="ML-1M not available (set --data-dir / LINREC_DATA)")
def test_the_earlier_ml_1m_file_keeps_its_own_name_and_all_ratings():
    stats = load_dataset("ml-1m-diffurec").stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (6040, 3706, 1_000_209)
    assert stats["file_sha256"] != STANDARD_ML_1M_SHA256
    assert locate("ml-1m-u2999")[0] == locate("ml-1m-diffurec")[0]  # the tie-order study's users: that file


def _id_map(root, name):
    with gzip.open(root / name, "rt") as handle:
        return dict(line.split()[:2] for line in handle if line.strip() and line.split()[0].isdigit())


@pytest.mark.skipif(
    not (_shared("ml-1m") and _shared("ml-1m-diffurec") and _shared("ml-1m-ratings-u2999")),
    reason="ML-1M files not available",
)
def test_prepare_gives_the_standard_file_s_sequences():
    """`data prepare ml-1m` on ratings.dat: the same films as the standard file (>= 5 ratings, counted over all
    1,000,209 ratings of the full file) and, for the users whose timestamps exist here (1-2999), the same
    sequences, ties included, under SASRec's published id maps."""
    from bench.data.prepare import STANDARD_ML_1M_MIN_RATINGS, _standard_ml_1m, _timed_events

    root = locate("ml-1m")[0].parent
    films, users = _id_map(root, "ml-1m_sasrec_item_map.txt.gz"), _id_map(root, "ml-1m_sasrec_user_map.txt.gz")
    full = load_dataset("ml-1m-diffurec")
    rank_to_movie = _id_map(root, "ml-1m_item_map.tsv.gz")  # its item ids are ranks of MovieLens ids
    counts = Counter(full.item_ids[i - 1] for sequence in full.sequences for i in sequence)
    rated = {rank_to_movie[rank] for rank, count in counts.items() if count >= STANDARD_ML_1M_MIN_RATINGS}
    assert rated == set(films.values())

    path = locate("ml-1m-ratings-u2999")[0]
    events = _timed_events(gzip.open(path, "rt", encoding="latin-1").read(), "::", path)
    prepared = defaultdict(list)
    for line in _standard_ml_1m(events, films=rated):
        user, movie = line.split()
        prepared[user].append(movie)
    standard = read_interactions(*locate("ml-1m"))
    in_movielens_ids = {users[u]: [films[i] for i in items] for u, items in standard.items() if int(users[u]) < 3000}
    assert len(prepared) == 2999 and dict(prepared) == in_movielens_ids


def test_prepare_ml_1m_keeps_films_with_5_ratings_in_stable_time_order(tmp_path):
    from bench.data.prepare import prepare

    # film 10: 5 ratings (kept); film 20: 4 (dropped); user 1 rates 10 and 30 in one second: file order kept
    lines = [f"{u}::10::4::{100 + u}" for u in range(1, 6)] + [f"{u}::20::3::50" for u in range(1, 5)]
    lines += [f"{u}::30::5::101" for u in range(1, 6)]
    lines.insert(0, "1::30::2::101")  # user 1: 30 before 10 at t=101 in the file... and a second rating of 30
    target = prepare("ml-1m", _zip(tmp_path / "ml-1m.zip", "ml-1m/ratings.dat", "\n".join(lines)), tmp_path / "data")
    text = gzip.open(target, "rt").read().splitlines()
    assert text[:3] == ["1 30", "1 10", "1 30"] and not any(line.endswith(" 20") for line in text)
    assert load_dataset("ml-1m", tmp_path / "data").stats()["items"] == 2


@pytest.mark.skipif(not _shared("ml-1m-ratings-u2999"), reason="ML-1M not available (set --data-dir / LINREC_DATA)")
def test_ml_1m_users_1_to_2999_differ_from_the_raw_ratings_in_tie_order_only():
    """Both files rank MovieIDs the same way, so the remapped ids agree: same users, same items per user; the
    order differs (equal timestamps are ordered differently), which the tie-order ablation measures."""
    ours, raw = load_dataset("ml-1m-u2999"), load_dataset("ml-1m-ratings-u2999")
    assert ours.num_users == raw.num_users == 2999
    assert [sorted(s) for s in ours.sequences] == [sorted(s) for s in raw.sequences]
    assert sum(a != b for a, b in zip(ours.sequences, raw.sequences, strict=True)) > 1000


@pytest.mark.skipif(not _shared("ml-100k"), reason="ML-100K not available")
def test_ml_100k_matches_published_statistics():
    stats = load_dataset("ml-100k").stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)


def _zip(path, member, text):
    import zipfile

    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr(member, text)
    return path


def test_prepare_ml_1m_from_the_official_archive(tmp_path):
    from bench.data.prepare import prepare

    ratings = "".join(f"{u}::30::4::500\n{u}::10::1::400\n" for u in range(2, 7))
    ratings = (
        "1::20::5::300\n1::10::3::100\n1::30::2::100\n" + ratings + "".join(f"{u}::20::4::9\n" for u in (7, 8, 9, 10))
    )
    target = prepare("ml-1m", _zip(tmp_path / "ml-1m.zip", "ml-1m/ratings.dat", ratings), tmp_path / "data")
    lines = gzip.open(target, "rt").read().splitlines()
    assert lines[:5] == ["1 10", "1 30", "1 20", "2 10", "2 30"]  # by time, ties in file order
    assert load_dataset("ml-1m", tmp_path / "data").stats()["interactions"] == 17


def test_prepare_ml_100k_and_a_preprocessed_file(tmp_path):
    from bench.data.prepare import prepare

    udata = "7\t3\t4\t99\n7\t2\t4\t98\n8\t2\t5\t97\n"
    prepare("ml-100k", _zip(tmp_path / "ml-100k.zip", "ml-100k/u.data", udata), tmp_path / "data")
    assert load_dataset("ml-100k", tmp_path / "data").sequences == [[1, 2], [1]]  # item 2 (first by time) -> 1
    beauty = _write(tmp_path / "Beauty.txt", "1 5 6 7\n2 6 8\n")
    prepare("beauty", beauty, tmp_path / "data")
    assert load_dataset("beauty", tmp_path / "data").num_users == 2
    with pytest.raises(DataFormatError, match="unknown dataset 'nope'"):
        prepare("nope", beauty, tmp_path / "data")
    with pytest.raises(DataFormatError, match="no ratings.dat inside"):
        prepare("ml-1m", _zip(tmp_path / "wrong.zip", "README", "x"), tmp_path / "data")
