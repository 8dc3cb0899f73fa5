module github.com/rbee-hive/rbee-hive/shutdown

go 1.26
