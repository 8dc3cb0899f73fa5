module github.com/rbee-hive/rbee-hive/resources

go 1.26
