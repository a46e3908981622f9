-- Least privilege for sluice on MySQL / MariaDB (run as an admin).
CREATE USER 'sluice'@'%' IDENTIFIED BY 'change-me';
-- Reading the binlog takes global privileges, which MySQL grants only ON *.*;
-- they give no access to any table. MariaDB 10.5+ calls REPLICATION CLIENT
-- BINLOG MONITOR (both names work).
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice'@'%';
-- Backfills read the captured tables: these, not shop.* and never *.*
-- (which includes mysql.user).
GRANT SELECT ON shop.orders TO 'sluice'@'%';
GRANT SELECT ON shop.customers TO 'sluice'@'%';
-- The backfill watermarks, created once so sluice needs no CREATE.
CREATE TABLE IF NOT EXISTS shop.sluice_signal (source VARCHAR(255) NOT NULL PRIMARY KEY,
  kind VARCHAR(16) NOT NULL, id VARCHAR(255) NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
GRANT SELECT, INSERT, UPDATE ON shop.sluice_signal TO 'sluice'@'%';
