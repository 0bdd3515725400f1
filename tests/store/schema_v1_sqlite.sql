BEGIN TRANSACTION;
CREATE TABLE clients (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	client_id VARCHAR(200) NOT NULL, 
	num_samples BIGINT, 
	created_at DATETIME NOT NULL, 
	extra TEXT, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_clients_run_client UNIQUE (run_id, client_id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "clients" VALUES(1,'4b046cd4c972441199e8b9de1ad2fc1d','site-a',100,'2026-11-23 10:35:40.862901',NULL);
INSERT INTO "clients" VALUES(2,'4b046cd4c972441199e8b9de1ad2fc1d','site-b',50,'2026-11-23 10:35:40.862905',NULL);
CREATE TABLE global_models (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	round INTEGER NOT NULL, 
	num_samples BIGINT NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	blob_key VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_global_models_run_round UNIQUE (run_id, round), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "global_models" VALUES(1,'4b046cd4c972441199e8b9de1ad2fc1d',0,0,'1f1a0d91301ae0bd2ed0282cd1bcbc205e12b0b95280c62a7edfb94da7ce938b',NULL,'2026-11-23 10:35:40.871711');
CREATE TABLE local_models (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	round INTEGER NOT NULL, 
	client_id VARCHAR(200) NOT NULL, 
	num_samples BIGINT NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	blob_key VARCHAR(64), 
	metrics TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_local_models_run_round_client UNIQUE (run_id, round, client_id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "local_models" VALUES(1,'4b046cd4c972441199e8b9de1ad2fc1d',1,'site-a',100,'1f1a0d91301ae0bd2ed0282cd1bcbc205e12b0b95280c62a7edfb94da7ce938b',NULL,'{"loss": 0.25}','2026-11-23 10:35:40.873030');
CREATE TABLE metrics (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	round INTEGER NOT NULL, 
	scope VARCHAR(20) NOT NULL, 
	client_id VARCHAR(200), 
	name VARCHAR(200) NOT NULL, 
	value FLOAT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "metrics" VALUES(1,'4b046cd4c972441199e8b9de1ad2fc1d',1,'server',NULL,'accuracy',0.5,'2026-11-23 10:35:40.874553');
CREATE TABLE rejections (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	round INTEGER, 
	client_id VARCHAR(200), 
	code VARCHAR(100) NOT NULL, 
	reason TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "rejections" VALUES(1,'4b046cd4c972441199e8b9de1ad2fc1d',1,'site-b','invalid_weights','tensor ''w'' has NaN','2026-11-23 10:35:40.879914');
CREATE TABLE rounds (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	round INTEGER NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	selected TEXT NOT NULL, 
	opened_at DATETIME NOT NULL, 
	closed_at DATETIME, 
	num_updates INTEGER NOT NULL, 
	num_samples BIGINT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_rounds_run_round UNIQUE (run_id, round), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "rounds" VALUES(1,'4b046cd4c972441199e8b9de1ad2fc1d',1,'open','["site-a", "site-b"]','2026-11-23 10:35:40.868238',NULL,0,0);
CREATE TABLE runs (
	id VARCHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	seed BIGINT NOT NULL, 
	config TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	summary TEXT, 
	PRIMARY KEY (id)
);
INSERT INTO "runs" VALUES('4b046cd4c972441199e8b9de1ad2fc1d','hospital-pilot','deployment','running',7,'{"rounds": {"max_rounds": 3}}','2026-11-23 10:35:40.855839',NULL,NULL);
CREATE TABLE schema_version (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "schema_version" VALUES(1,1);
CREATE INDEX ix_runs_created_at ON runs (created_at);
CREATE INDEX ix_metrics_run_scope_name ON metrics (run_id, scope, name);
CREATE INDEX ix_rejections_run_id ON rejections (run_id);
COMMIT;
