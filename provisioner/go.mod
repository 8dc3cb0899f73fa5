module github.com/rbee-hive/rbee-hive/provisioner

go 1.26
