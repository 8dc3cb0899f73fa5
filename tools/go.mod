module github.com/rbee-hive/rbee-hive/tools

go 1.26

require golang.org/x/mod v0.40.0
