package operations

// infocyteOps are the writes of Infocyte HUNT (Datto EDR) that the
// vendor's own PowerShell module makes: every Invoke-ICAPI call with POST,
// PUT, PATCH or DELETE in "HUNT Powershell Module" of
// github.com/Infocyte/PowershellTools at commit
// dbc9c0f87ecd0bae5384d4bd2b3aa2bb76137bd7, named after its cmdlet. The
// API (LoopBack 3) publishes no spec. Scans and response extensions are
// respond; agent uninstall, stored credentials, rules, extensions,
// targets, schedules and every other write admin; every GET read
// (Infocyte's ReadAll). Templates are relative to /api.
var infocyteOps = []Operation{
	// Scans and responses (scan.ps1; Invoke-ICResponse runs an extension
	// through targets/scan).
	{Name: "invoke_scan", Tier: Respond, Method: "POST", Paths: []string{"/targets/{id}/scan"}},
	{Name: "invoke_find_hosts", Tier: Respond, Method: "POST", Paths: []string{"/targets/{id}/Enumerate"}},
	{Name: "invoke_scan_target", Tier: Respond, Method: "POST", Paths: []string{"/targets/scan"}},
	{Name: "import_survey_scan", Tier: Respond, Method: "POST", Paths: []string{"/scans"}},
	{Name: "send_surveys", Tier: Respond, Method: "POST", Paths: []string{"/survey"}},
	{Name: "cancel_user_task", Tier: Respond, Method: "POST", Paths: []string{"/userTasks/{id}/cancel"}},
	// Analysts' marks (admin.ps1).
	{Name: "new_flag", Tier: Admin, Method: "POST", Paths: []string{"/flags"}},
	{Name: "update_flag", Tier: Admin, Method: "PUT", Paths: []string{"/flags/{id}"}},
	{Name: "remove_flag", Tier: Admin, Method: "DELETE", Paths: []string{"/flags/{id}"}},
	{Name: "add_comment", Tier: Admin, Method: "POST", Paths: []string{"/userComments"}},
	// Extensions (extensions.ps1): Import-ICExtension and Update-ICExtension
	// both POST extensions.
	{Name: "save_extension", Tier: Admin, Method: "POST", Paths: []string{"/extensions"}},
	{Name: "set_extension_global_variable", Tier: Admin, Method: "POST", Paths: []string{"/ExtensionGlobalVariables"}},
	{Name: "remove_extension", Tier: Admin, Method: "DELETE", Paths: []string{"/extensions/{id}"}},
	// Rules (rules.ps1).
	{Name: "import_rule", Tier: Admin, Method: "POST", Paths: []string{"/rules", "/rule"}},
	{Name: "update_rule", Tier: Admin, Method: "POST", Paths: []string{"/rules/{id}"}},
	{Name: "remove_rule", Tier: Admin, Method: "DELETE", Paths: []string{"/rules/{id}"}},
	{Name: "remove_rules", Tier: Admin, Method: "DELETE", Paths: []string{"/rules"}},
	// Schedules (scan_schedule.ps1).
	{Name: "add_scan_schedule", Tier: Admin, Method: "POST", Paths: []string{"/scheduledJobs"}},
	{Name: "remove_scan_schedule", Tier: Admin, Method: "DELETE", Paths: []string{"/scheduledJobs/{id}"}},
	// Targets, controllers, stored credentials, addresses, agents,
	// queries (targetgroupmgmt.ps1).
	{Name: "new_target_group", Tier: Admin, Method: "POST", Paths: []string{"/targets"}},
	{Name: "remove_target_group", Tier: Admin, Method: "DELETE", Paths: []string{"/targets/{id}"}},
	{Name: "new_controller_group", Tier: Admin, Method: "POST", Paths: []string{"/controllergroups"}},
	{Name: "remove_controller_group", Tier: Admin, Method: "DELETE", Paths: []string{"/controllergroups/{id}"}},
	{Name: "new_credential", Tier: Admin, Method: "POST", Paths: []string{"/credentials"}},
	{Name: "remove_credential", Tier: Admin, Method: "DELETE", Paths: []string{"/credentials/{id}"}},
	{Name: "remove_address", Tier: Admin, Method: "DELETE", Paths: []string{"/Addresses/{id}"}},
	{Name: "remove_addresses", Tier: Admin, Method: "DELETE", Paths: []string{"/Addresses"}},
	{Name: "remove_agent", Tier: Admin, Method: "POST", Paths: []string{"/agents/uninstall"}},
	{Name: "new_query", Tier: Admin, Method: "POST", Paths: []string{"/queries"}},
	{Name: "remove_query", Tier: Admin, Method: "DELETE", Paths: []string{"/queries/{id}"}},
}
