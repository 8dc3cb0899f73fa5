module github.com/rbee-hive/rbee-hive/tools

go 1.26
