#!/usr/bin/python3
"""The agent's real SQLite file, read with Python's sqlite3: WAL mode and the
latest schema version after a start, and a database from an older version
migrated on start without losing its rows.

The migrations are read from agent/store.c (the store_migrations array), so
"latest" is what the source defines and an old database is built from the
very SQL the first release shipped."""

import os
import re
import sqlite3
import time

from scenario import AgentTestCase, main, sandbox

STORE_C = os.path.join(sandbox.REPO, "agent", "store.c")


def store_migrations():
    """The SQL of each entry of store_migrations[] in agent/store.c."""
    with open(STORE_C) as f:
        source = f.read()
    body = source.split("store_migrations[] = {", 1)[1].split("\n};", 1)[0]
    entries, current = [], []
    token = re.compile(r'/\*.*?\*/|"((?:[^"\\]|\\.)*)"|(,)', re.S)
    for m in token.finditer(body):
        if m.group(1) is not None:
            current.append(m.group(1).replace('\\"', '"'))
        elif m.group(2) is not None:
            entries.append("".join(current))
            current = []
    if current:
        entries.append("".join(current))
    return [e for e in entries if e.strip()]


MIGRATIONS = store_migrations()


class Database(AgentTestCase):

    def test_wal_mode_and_latest_schema(self):
        self.assertGreaterEqual(len(MIGRATIONS), 9)  # the parse found them
        db = self.db()
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0],
                         "wal")
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0],
                         len(MIGRATIONS))
        # The file holds what the agent wrote: the linked users.
        self.assertEqual(
            db.execute("SELECT count(*) FROM users").fetchone()[0],
            len(self.box.users))

    def old_database(self, path, version):
        """A database at schema `version`, built from the first migrations
        and holding one sent message, one linked user and an audit row."""
        now = int(time.time() * 1000)
        db = sqlite3.connect(path)
        try:
            for sql in MIGRATIONS[:version]:
                db.executescript(sql)
            db.execute("PRAGMA user_version = %d" % version)
            db.execute(
                "INSERT INTO messages (queue_id, sender, recipients,"
                " message_id, size, spool_path, state, attempts,"
                " next_attempt_at, created_at, updated_at, sent_at)"
                " VALUES ('0AB1CD', 'alice@contoso.example',"
                " '[\"x@example.net\"]', '<old@contoso.example>', 123,"
                " 'spool/gone', 'sent', 1, ?, ?, ?, ?)",
                (now, now, now, now))
            db.execute(
                "INSERT INTO users (address, state, graph_id, display_name,"
                " linked_at, updated_at) VALUES ('alice@contoso.example',"
                " 'linked', '00000001-0000-4000-8000-000000000001',"
                " 'Alice Adams', ?, ?)", (now, now))
            db.execute("INSERT INTO audit (at, actor, action, detail)"
                       " VALUES (?, 'cli', 'link', 'before the upgrade')",
                       (now,))
            db.commit()
        finally:
            db.close()

    def test_version_1_database_is_migrated_keeping_its_rows(self):
        path = self.box.path("old.db")
        self.old_database(path, 1)
        self.addCleanup(self.use_database, "agent.db")
        self.use_database("old.db")

        db = self.db_at(path)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0],
                         len(MIGRATIONS))
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0],
                         "wal")
        self.assertEqual(db.execute(
            "SELECT queue_id, sender, recipients, message_id, size, state,"
            " attempts, verify_first, envelope_digest, draft_id, retried_at"
            " FROM messages").fetchall(),
            [("0AB1CD", "alice@contoso.example", '["x@example.net"]',
              "<old@contoso.example>", 123, "sent", 1, 0, None, None, None)])
        self.assertEqual(db.execute(
            "SELECT address, state, display_name FROM users").fetchall(),
            [("alice@contoso.example", "linked", "Alice Adams")])
        self.assertIn(("cli", "link", "before the upgrade"), db.execute(
            "SELECT actor, action, detail FROM audit").fetchall())
        # The tables later versions added are there, and usable.
        db.execute("SELECT address, name, uid, event_id, etag, start_tzid,"
                   " end_tzid, client_attendees FROM caldav_objects")
        db.execute("SELECT state, address FROM link_pending")
        log = self.box.agent_output()
        for v in range(2, len(MIGRATIONS) + 1):
            self.assertIn("store migrated path=%s version=%d" % (path, v), log)
        self.assertNotIn("store migrated path=%s version=1\n" % path, log)

    def use_database(self, name):
        """Restarts the agent on the database file name. The sandbox's own
        database line changes: a second one would be refused as a key set
        twice."""
        self.assertEqual(self.box.stop_agent(), 0)
        text = self.box.agent_config_text()
        self.assertIn("\ndatabase = agent.db\n", text)
        with open(self.box.path("agent.ini"), "w") as f:
            f.write(text.replace("\ndatabase = agent.db\n",
                                 "\ndatabase = %s\n" % name, 1))
        self.box.start_agent()

    def db_at(self, path):
        conn = sqlite3.connect(path, timeout=10)
        self.addCleanup(conn.close)
        return conn


if __name__ == "__main__":
    main()
