-- A station index as this station's code wrote it at schema version 1 (before schema_version),
-- dumped with sqlite3 iterdump; tests/station/contract/test_index_contract.py migrates it.
BEGIN TRANSACTION;
CREATE TABLE assignments (
    device TEXT NOT NULL, serial TEXT NOT NULL, officer TEXT NOT NULL, issued_us INTEGER NOT NULL,
    line TEXT NOT NULL, PRIMARY KEY (device, serial)) WITHOUT ROWID;
INSERT INTO "assignments" VALUES('cam-1','serial-1','A1',4000,'signed line');
CREATE TABLE cases (
    device TEXT NOT NULL, case_id TEXT NOT NULL, procedure TEXT NOT NULL, opened_seq INTEGER NOT NULL,
    closed_seq INTEGER, missing TEXT, stages TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (device, case_id)) WITHOUT ROWID;
INSERT INTO "cases" VALUES('cam-1','case-7','inspection',2,NULL,NULL,'[]');
CREATE TABLE claims (
    device TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, wall_us INTEGER NOT NULL,
    PRIMARY KEY (device, name)) WITHOUT ROWID;
INSERT INTO "claims" VALUES('cam-1','segments/000001.ts','4444444444444444444444444444444444444444444444444444444444444444',4096,3,'segment',30);
CREATE TABLE devices (
    id TEXT PRIMARY KEY, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL, enrolled_us INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0);
INSERT INTO "devices" VALUES('cam-1','abababababababababababababababababababababababababababababababab','fp-cam-1',1000,0);
CREATE TABLE files (
    device TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, seq INTEGER NOT NULL,
    stored_us INTEGER NOT NULL,
    PRIMARY KEY (device, name)) WITHOUT ROWID;
CREATE TABLE health (
    device TEXT PRIMARY KEY, at_wall_us INTEGER NOT NULL, boot TEXT NOT NULL, state TEXT NOT NULL,
    summary TEXT NOT NULL, clock_trusted INTEGER NOT NULL, checks TEXT NOT NULL, metrics TEXT NOT NULL,
    line BLOB NOT NULL, received_us INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO "health" VALUES('cam-1',3000,'b1','ok','all good',1,'[{"name": "disk", "ok": true, "detail": ""}]','{"free": 12}',X'6C696E650A',3010);
CREATE TABLE problems (
    id INTEGER PRIMARY KEY, device TEXT, seq INTEGER, object TEXT, kind TEXT NOT NULL, reason TEXT NOT NULL,
    topic TEXT, at_us INTEGER NOT NULL, last_us INTEGER NOT NULL, repeats INTEGER NOT NULL DEFAULT 1,
    resolved_us INTEGER);
INSERT INTO "problems" VALUES(1,'cam-1',5,NULL,'gap','seq 4 missing','bodycam/cam-1/up/records',2060,2060,1,NULL);
CREATE TABLE ranges (
    device TEXT NOT NULL, sha256 TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    PRIMARY KEY (device, sha256, offset, length)) WITHOUT ROWID;
INSERT INTO "ranges" VALUES('cam-1','4444444444444444444444444444444444444444444444444444444444444444',0,1024);
CREATE TABLE records (
    device TEXT NOT NULL, seq INTEGER NOT NULL, link TEXT NOT NULL, type TEXT NOT NULL, wall_us INTEGER NOT NULL,
    case_id TEXT, stored_us INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    PRIMARY KEY (device, seq)) WITHOUT ROWID;
INSERT INTO "records" VALUES('cam-1',1,'1111111111111111111111111111111111111111111111111111111111111111','boot',10,NULL,2050,0,100);
INSERT INTO "records" VALUES('cam-1',2,'2222222222222222222222222222222222222222222222222222222222222222','case-open',20,'case-7',2050,100,120);
INSERT INTO "records" VALUES('cam-1',3,'3333333333333333333333333333333333333333333333333333333333333333','segment',30,'case-7',2050,220,140);
CREATE TABLE sessions (
    device TEXT NOT NULL, id TEXT NOT NULL, started_us INTEGER NOT NULL,
    t1_us INTEGER, t2_us INTEGER, t3_us INTEGER, t4_us INTEGER, offset_us INTEGER, delay_us INTEGER,
    records INTEGER NOT NULL DEFAULT 0, duplicate_records INTEGER NOT NULL DEFAULT 0,
    chunks_written INTEGER NOT NULL DEFAULT 0, duplicate_chunks INTEGER NOT NULL DEFAULT 0,
    files_stored INTEGER NOT NULL DEFAULT 0, ended_us INTEGER,
    PRIMARY KEY (device, id));
INSERT INTO "sessions" VALUES('cam-1','s1',2000,1900,2000,2100,2200,5,300,3,0,0,0,0,NULL);
CREATE INDEX problems_by_device ON problems (device, kind, seq);
COMMIT;
PRAGMA user_version=1;
