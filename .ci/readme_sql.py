#!/usr/bin/env python3
"""Runs every SQL block of README.md in the tool its first line names, then checks the column
types DuckDB sees in the default views, over the Parquet files and over the SQLite file.

Usage (from the folder holding `landing/` and `fhirsync.db`, as `.ci/readme-sql.sh` sets it up):

    readme_sql.py README.md FHIRSYNC_BINARY

A SQL block is a fenced block with the info string `sql`; its first line is `-- duckdb`,
`-- sqlite3 fhirsync.db` or `-- psql` (psql connects to $FHIRSYNC_TEST_POSTGRES_URL). Each block
must run without error and its last statement must return rows, so an example that silently reads
nothing (a wrong path, a renamed column) fails. Exits 1 with the reasons on any failure.
"""

import os
import re
import sqlite3
import subprocess
import sys

import duckdb
import duckdb_ext

TOOLS = ("-- duckdb", "-- sqlite3 fhirsync.db", "-- psql")


def sql_blocks(readme):
    """(line number, tool line, SQL) of every ```sql block."""
    text = open(readme, encoding="utf-8").read()
    out = []
    for m in re.finditer(r"^```sql[ \t]*\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL):
        line = text.count("\n", 0, m.start()) + 1
        body = m.group(1)
        out.append((line, body.split("\n", 1)[0].strip(), body))
    return out


def duckdb_connection():
    """DuckDB with the sqlite extension from the duckdb-ext-sqlite package (never downloaded)."""
    con = duckdb.connect()
    con.execute("SET extension_directory = ?", [list(duckdb_ext.__path__)[0] + "/extensions"])
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = true")
    con.execute("SET TimeZone = 'UTC'")
    return con


def run_duckdb(sql):
    cur = duckdb_connection().execute(sql)
    return [tuple(str(v) for v in row) for row in cur.fetchall()]


def run_sqlite(sql):
    con = sqlite3.connect("file:fhirsync.db?mode=ro", uri=True)
    rows, statement = [], ""
    for line in sql.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            rows = [tuple(str(v) for v in r) for r in con.execute(statement).fetchall()]
            statement = ""
    if statement.strip() and not statement.strip().startswith("--"):
        raise ValueError(f"unterminated statement: {statement.strip()}")
    return rows


def run_psql(sql):
    url = os.environ["FHIRSYNC_TEST_POSTGRES_URL"]
    done = subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-align", "--tuples-only", "-f", "-"],
        input=sql, text=True, capture_output=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return [tuple(line.split("|")) for line in done.stdout.splitlines() if line]


def view_columns(binary):
    """{view: [(column, FHIR kind, collection)]} from `fhirsync views list --columns`."""
    listing = subprocess.run([binary, "views", "list", "--columns"], check=True, text=True,
                             capture_output=True).stdout
    views, current = {}, None
    for line in listing.splitlines():
        if not line.startswith(" "):
            current = line.split()[0]
            views[current] = []
        else:
            m = re.fullmatch(r"\s+(\w+): (\w+)( \(collection\))?", line)
            views[current].append((m.group(1), m.group(2), bool(m.group(3))))
    return views


def expected_types(columns, mapping):
    """(column, DuckDB type pattern) of a view table, companions included."""
    out = [("_fhir_version", "VARCHAR"), ("_id", "VARCHAR")]
    for name, kind, collection in columns:
        out.append((name, "VARCHAR" if collection else mapping[kind]))
        if not collection and kind in ("Date", "DateTime"):
            out.append((name + "_text", "VARCHAR"))
    return out


PARQUET_TYPES = {"String": "VARCHAR", "Time": "VARCHAR", "Integer": "BIGINT", "Decimal": r"DECIMAL\(38,\d+\)",
                 "Boolean": "BOOLEAN", "Date": "DATE", "DateTime": "TIMESTAMP WITH TIME ZONE"}
SQLITE_TYPES = {"String": "VARCHAR", "Time": "VARCHAR", "Integer": "BIGINT", "Decimal": "VARCHAR",
                "Boolean": "BIGINT", "Date": "DATE", "DateTime": "TIMESTAMP"}


def check_types(binary, failures):
    con = duckdb_connection()
    con.execute("ATTACH 'fhirsync.db' AS fhirsync (TYPE sqlite, READ_ONLY)")
    views = view_columns(binary)
    if not views:
        failures.append("`fhirsync views list --columns` listed no view")
    for view, columns in views.items():
        sources = [
            ("Parquet", f"SELECT * FROM read_parquet('landing/current/views/{view}/*.parquet')", PARQUET_TYPES),
            ("SQLite", f"SELECT * FROM fhirsync.view_{view}", SQLITE_TYPES),
        ]
        for source, query, mapping in sources:
            seen = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {query}").fetchall()]
            want = expected_types(columns, mapping)
            ok = len(seen) == len(want) and all(
                s[0] == w[0] and re.fullmatch(w[1], s[1]) for s, w in zip(seen, want)
            )
            if not ok:
                failures.append(f"DuckDB over {source} view {view}: columns {seen}, expected {want}")
            rows = con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]
            verdict = "typed as expected" if ok else "NOT typed as expected"
            print(f"  {source:7} view {view:22} {len(seen):3} columns {verdict}, {rows} rows")
    # Typed values are read, not only declared: instants and decimals of real rows.
    for source, query in [
        ("Parquet", "read_parquet('landing/current/views/observation/*.parquet')"),
        ("SQLite", "fhirsync.view_observation"),
    ]:
        n = con.execute(
            f"SELECT count(effective_date_time), count(value_quantity) FROM {query}"
        ).fetchone()
        if min(n) == 0:
            failures.append(f"DuckDB over {source}: no typed effective_date_time/value_quantity read: {n}")


def main():
    readme, binary = sys.argv[1], sys.argv[2]
    failures = []
    blocks = sql_blocks(readme)
    runners = {"-- duckdb": run_duckdb, "-- sqlite3 fhirsync.db": run_sqlite, "-- psql": run_psql}
    for line, tool, sql in blocks:
        if tool not in runners:
            failures.append(f"README.md:{line}: the SQL block's first line must be one of {TOOLS}, not {tool!r}")
            continue
        try:
            rows = runners[tool](sql)
        except Exception as e:  # report every failing block, not only the first
            failures.append(f"README.md:{line} ({tool[3:]}): {e}")
            continue
        print(f"README.md:{line} ({tool[3:]}): {len(rows)} rows")
        for row in rows[:5]:
            print("    " + " | ".join(row))
        if not rows:
            failures.append(f"README.md:{line} ({tool[3:]}): returned no rows")
    used = {tool for _, tool, _ in blocks}
    for tool in TOOLS:
        if tool not in used:
            failures.append(f"README.md has no SQL block for {tool!r}; this check expects one")
    print("DuckDB column types of the default views:")
    check_types(binary, failures)
    for f in failures:
        print("FAIL " + f)
    print(f"{len(blocks)} README SQL blocks, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
