module github.com/rbee-hive/rbee-hive/httpserver

go 1.26
