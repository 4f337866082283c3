package postgres

// insertOnlySuffix names the companion publication that carries tables
// without a usable replica identity, for inserts (and truncates) only.
const insertOnlySuffix = "_insert_only"
