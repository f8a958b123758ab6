#!/usr/bin/env python3
"""Which tables and indexes a SQLite database's commits write, read from its WAL.

    scripts/wal-pages.py /tmp/fidelis-bench.db [LAST_COMMITS]

Run it on a bench database right after a run (the WAL is left as the run wrote it; a second
connection only reads it). Every page a commit changes is one frame of the WAL, written and
synced whole (4 KiB) however little of it changed, so this is what a purchase costs the disk:
it prints the frames per commit and, for each table or index, the distinct pages the last
commits wrote of it, per commit. Pages of indexes keyed by something random (a member, an
order id) show up once per purchase; the tails of tables and indexes appended in order once
per commit.

Needs Python's sqlite3 module built with the `dbstat` table (most Linux distributions' are).
Only the frames written since the WAL last started over are read.
"""
import collections
import sqlite3
import struct
import sys


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    path = sys.argv[1]
    last = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        owner = {page: name for name, page in db.execute("SELECT name, pageno FROM dbstat")}
    except sqlite3.OperationalError as e:
        sys.exit(f"this Python's SQLite has no dbstat table: {e}")
    commits, frames = [], []
    with open(path + "-wal", "rb") as wal:
        header = wal.read(32)
        if len(header) < 32:
            sys.exit("the WAL is empty")
        page_size, salts = struct.unpack(">I", header[8:12])[0], header[16:24]
        while True:
            frame = wal.read(24)
            if len(frame) < 24 or frame[8:16] != salts:
                break
            page, commit_size = struct.unpack(">II", frame[:8])
            wal.seek(page_size, 1)
            frames.append(page)
            if commit_size:
                commits.append(frames)
                frames = []
    if not commits:
        sys.exit("no commit in the WAL (it may just have started over)")
    commits = commits[-last:]
    print(f"{len(commits)} commits, {sum(map(len, commits)) / len(commits):.1f} frames a commit")
    pages = collections.Counter()
    for commit in commits:
        for page in set(commit):
            pages[owner.get(page, "(free or new)")] += 1
    for name, n in pages.most_common():
        print(f"{n / len(commits):7.2f}  {name}")


if __name__ == "__main__":
    main()
