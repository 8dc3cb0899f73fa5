module github.com/rbee-hive/rbee-hive/metrics

go 1.26
