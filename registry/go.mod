module github.com/rbee-hive/rbee-hive/registry

go 1.26
