module github.com/rbee-hive/rbee-hive/cmd/rbee-hive

go 1.26
