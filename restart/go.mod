module github.com/rbee-hive/rbee-hive/restart

go 1.26
