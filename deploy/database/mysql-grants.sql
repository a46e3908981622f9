-- Least privilege for sluice on MySQL / MariaDB.
CREATE USER 'sluice'@'%' IDENTIFIED BY 'change-me';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice'@'%';   -- MariaDB 10.5+: also BINLOG MONITOR
GRANT SELECT ON shop.* TO 'sluice'@'%';
-- The backfill watermarks, created once so sluice needs no CREATE.
CREATE TABLE IF NOT EXISTS shop.sluice_signal (source VARCHAR(255) NOT NULL PRIMARY KEY,
  kind VARCHAR(16) NOT NULL, id VARCHAR(255) NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
GRANT INSERT, UPDATE ON shop.sluice_signal TO 'sluice'@'%';
