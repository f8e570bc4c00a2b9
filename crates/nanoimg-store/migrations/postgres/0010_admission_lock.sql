-- The PostgreSQL twin of sqlite/0010_admission_lock.sql: the lock row every admission to the
-- shared queue updates first, so the counts and the insert are one decision.
CREATE TABLE admission_lock (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    admitted BIGINT NOT NULL
);
INSERT INTO admission_lock (id, admitted) VALUES (1, 0);
