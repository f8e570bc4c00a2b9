-- One row, updated first by every admission to the shared queue: API nodes (processes) queue on
-- its lock, so counting a tenant's jobs and the queue's depth and inserting the job are one
-- decision, and concurrent submissions never overshoot a cap.
CREATE TABLE admission_lock (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    admitted INTEGER NOT NULL
);
INSERT INTO admission_lock (id, admitted) VALUES (1, 0);
