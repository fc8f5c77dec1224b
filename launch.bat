@echo off
rem Inkframe Studio, one click: make .venv on the first run, install what is missing, start the studio.
rem   launch.bat [app.py arguments]      e.g. launch.bat --port 7861 --no-browser, launch.bat doctor
rem   launch.bat test [pytest arguments] installs the test extras too and runs the test suite
rem Set INKFRAME_TORCH_INDEX to an index URL to install torch from that index instead; changing it reinstalls torch.
rem Safe to run again: it reuses .venv, skips pip when nothing changed, and rebuilds a broken .venv.
setlocal EnableExtensions DisableDelayedExpansion

rem Torch is installed before requirements.txt, and pinned here so that launch.bat and launch.sh agree.
set "TORCH_SPEC=torch==2.14.1 torchvision==0.29.1"
rem PyTorch 2.14's Windows CUDA builds: CUDA 13.0 for Turing and newer cards with driver 580 or later
rem and for all Blackwell cards, CUDA 12.6, the last with Maxwell and Pascal kernels, for older cards
rem such as the GTX 1060 or older drivers, and the CPU build when nvidia-smi finds no NVIDIA GPU.
set "TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu130"
set "TORCH_LEGACY_CUDA_INDEX=https://download.pytorch.org/whl/cu126"
set "TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu"

rem Read the folder and the arguments while delayed expansion is off, so that an exclamation mark in them survives.
set "ROOT=%~dp0"
set "MODE=run"
set "ARGS="
rem Kept out of a parenthesised block, where a closing parenthesis in the arguments would end it.
if /i "%~1"=="test" set "MODE=test"
if /i "%~1"=="test" set "ARGS=%*"
set "SCRIPT_NAME=%~nx0"

setlocal EnableDelayedExpansion

rem Pause before closing only when Explorer started this window (double-click), never in CI.
set "DOUBLE_CLICKED=0"
set "CMDLINE=!cmdcmdline!"
if /i not "!CMDLINE:%SCRIPT_NAME%=!"=="!CMDLINE!" set "DOUBLE_CLICKED=1"
if defined CI set "DOUBLE_CLICKED=0"

rem pushd also works when the folder is on a network share (\\server\share).
pushd "!ROOT!"
if errorlevel 1 (
    echo launch.bat: cannot open the folder !ROOT!
    goto :fail
)

rem In test mode, drop the leading test word, bare or quoted, from the arguments that go to pytest.
if "!MODE!"=="test" (
    if /i "!ARGS:~0,4!"=="test" (set "ARGS=!ARGS:~4!") else (set "ARGS=!ARGS:~6!")
)

set "VENV=!ROOT!.venv"
set "PY=!VENV!\Scripts\python.exe"
set "TORCH_STAMP=!VENV!\.inkframe-torch"
set "REQ_STAMP=!VENV!\.inkframe-requirements.txt"
set "DEV_STAMP=!VENV!\.inkframe-requirements-dev.txt"
rem These Python snippets must not contain an exclamation mark, percent sign, caret or double quote.
rem 64-bit Python 3.10 to 3.14 (launch.sh has the same rule; 3.15 is refused until checked). A candidate
rem judges itself: SUPPORTED_CHECK prints its minor version and exits 0 when it fits, prints nothing otherwise.
set "SUPPORTED_CHECK=import sys; v = sys.version_info; ok = v[0] == 3 and 10 <= v[1] <= 14 and sys.maxsize > 2**32; print(v[1] if ok else ''); sys.exit(0 if ok else 1)"
set "DESCRIBE_PY=import sys, platform; print('Python', sys.version.split()[0], platform.architecture()[0])"
set "VENV_CHECK=import sys, importlib.util; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 14) and importlib.util.find_spec('pip') else 1)"
rem What the launcher offers to install with winget when no supported Python is found.
set "WINGET_PYTHON=Python.Python.3.13"
set "GPU_PICK=import sys; a = sys.argv; t = ((open(a[1]).read().splitlines() or [''])[0] + ',').replace(' ', '').split(','); c = t[0].split('.'); d = t[1].split('.')[0]; ok = len(c) == 2 and c[0].isdigit() and c[1].isdigit(); cc = (int(c[0]), int(c[1])) if ok else (0, 0); drv = int(d) if d.isdigit() else 0; print(a[2] if cc >= (10, 0) or (cc >= (7, 5) and drv >= 580) else a[3])"
set "IMPORT_CHECK=import torch, torchvision, gradio"
if "!MODE!"=="test" set "IMPORT_CHECK=import torch, torchvision, gradio, pytest, playwright"

rem Two rounds at most: when the installed packages cannot be imported, rebuild .venv from scratch once.
set "ROUND=0"
:prepare
set /a ROUND+=1
call :ensure_venv
if errorlevel 1 goto :fail
call :install_torch
if errorlevel 1 goto :fail
set "REQ_FILE=requirements.txt"
set "STAMP_FILE=!REQ_STAMP!"
call :install_requirements
if errorlevel 1 goto :fail
if "!MODE!"=="test" (
    set "REQ_FILE=requirements-dev.txt"
    set "STAMP_FILE=!DEV_STAMP!"
    call :install_requirements
    if errorlevel 1 goto :fail
)
set "IMPORT_ERROR=!VENV!\.inkframe-import-error.txt"
"!PY!" -c "!IMPORT_CHECK!" >nul 2>"!IMPORT_ERROR!"
if not errorlevel 1 goto :start
if !ROUND! GEQ 2 goto :import_failed
rem A missing system DLL (usually the Visual C++ runtime) is not fixed by rebuilding .venv.
findstr /i /c:"DLL load failed" /c:"WinError 126" "!IMPORT_ERROR!" >nul 2>&1
if not errorlevel 1 goto :import_failed
echo launch.bat: the packages in .venv do not load; rebuilding .venv.
call :remove_venv
if errorlevel 1 goto :fail
goto :prepare

:start
rem Children (tests that start the studio, pip, playwright) see the venv as the active environment.
set "VIRTUAL_ENV=!VENV!"
set "PATH=!VENV!\Scripts;!PATH!"
if "!MODE!"=="test" goto :start_tests
rem Delayed expansion is off for this call, so an exclamation mark in the arguments reaches app.py unchanged.
setlocal DisableDelayedExpansion
"%PY%" app.py %*
endlocal & set "RC=%errorlevel%"
goto :after_run
:start_tests
"!PY!" -m pytest !ARGS!
set "RC=!errorlevel!"
:after_run
if not "!RC!"=="0" if "!DOUBLE_CLICKED!"=="1" pause
popd
exit /b !RC!


rem ---------------------------------------------------------------------------------------------
:ensure_venv
if exist "!PY!" (
    "!PY!" -c "!VENV_CHECK!" >nul 2>&1
    if not errorlevel 1 exit /b 0
    echo launch.bat: .venv is broken or uses an unsupported Python; rebuilding it.
)
rem Find a supported Python before deleting anything.
call :find_python
rem The newest fitting Python wins, from the py launcher's versions and from PATH. No probe may wait for
rem input, since py -3.14 may offer to install a missing 3.14: stdin is nul.
set "BASE_PY="
set "BASE_MINOR=0"
for %%V in (3.14 3.13 3.12 3.11 3.10) do (
    set "CANDIDATE=py -%%V"
    call :try_python
)
set "CANDIDATE=python"
call :try_python
set "CANDIDATE=python3"
call :try_python
if defined BASE_PY exit /b 0
set "FOUND_PY="
for /f "delims=" %%P in ('"python -c "!DESCRIBE_PY!" <nul 2>nul"') do if not defined FOUND_PY set "FOUND_PY=%%P"
if not defined FOUND_PY for /f "delims=" %%P in ('"py -c "!DESCRIBE_PY!" <nul 2>nul"') do if not defined FOUND_PY set "FOUND_PY=%%P"
echo.
if defined FOUND_PY (
    echo Inkframe Studio needs 64-bit Python 3.10 to 3.14, and the one found here is !FOUND_PY!.
) else (
    echo Inkframe Studio needs 64-bit Python 3.10 to 3.14, and none was found.
)
call :offer_python_install
if defined BASE_PY exit /b 0
echo Install Python 3.13 ^(64-bit^) from https://www.python.org/downloads/windows/ and tick "Add python.exe to PATH" on the installer's first screen, then run launch.bat again.
exit /b 1

rem Sets BASE_PY to CANDIDATE when CANDIDATE is a fitting Python newer than BASE_PY. The outer quotes in
rem the for /f command let CANDIDATE be a quoted path with spaces (cmd /c strips exactly that pair).
:try_python
set "MINOR="
for /f "delims=" %%M in ('"!CANDIDATE! -c "!SUPPORTED_CHECK!" <nul 2>nul"') do set "MINOR=%%M"
if not defined MINOR exit /b 0
rem Only a number counts: a stub such as the Microsoft Store's python alias may print a sentence instead.
for /f "delims=0123456789" %%X in ("!MINOR!") do set "MINOR="
if not defined MINOR exit /b 0
if !MINOR! GTR !BASE_MINOR! (
    set "BASE_PY=!CANDIDATE!"
    set "BASE_MINOR=!MINOR!"
)
exit /b 0

rem With winget (Windows 10 and 11), offer a per-user install and carry on in this window when it works.
:offer_python_install
where winget >nul 2>&1
if errorlevel 1 exit /b 0
if defined CI exit /b 0
choice /c YN /n /m "Install Python 3.13 for your user now with winget (no administrator rights needed)? [Y/N] "
if errorlevel 2 exit /b 0
winget install --exact --id !WINGET_PYTHON! --scope user --accept-package-agreements --accept-source-agreements
if errorlevel 1 (
    echo launch.bat: winget could not install Python; see its message above.
    exit /b 0
)
rem This window's PATH was read before the install: look where the per-user installer puts python.exe.
set "NEW_PY=!LOCALAPPDATA!\Programs\Python\Python313\python.exe"
if exist "!NEW_PY!" (
    set CANDIDATE="!NEW_PY!"
    call :try_python
)
if defined BASE_PY echo launch.bat: Python 3.13 is installed; carrying on.
exit /b 0

:install_torch
if errorlevel 1 goto :fail
set "REQ_FILE=requirements.txt"
set "STAMP_FILE=!REQ_STAMP!"
call :install_requirements
if errorlevel 1 goto :fail
if "!MODE!"=="test" (
    set "REQ_FILE=requirements-dev.txt"
    set "STAMP_FILE=!DEV_STAMP!"
    call :install_requirements
    if errorlevel 1 goto :fail
)
set "IMPORT_ERROR=!VENV!\.inkframe-import-error.txt"
"!PY!" -c "!IMPORT_CHECK!" >nul 2>"!IMPORT_ERROR!"
if not errorlevel 1 goto :start
if !ROUND! GEQ 2 goto :import_failed
rem A missing system DLL (usually the Visual C++ runtime) is not fixed by rebuilding .venv.
findstr /i /c:"DLL load failed" /c:"WinError 126" "!IMPORT_ERROR!" >nul 2>&1
if not errorlevel 1 goto :import_failed
echo launch.bat: the packages in .venv do not load; rebuilding .venv.
call :remove_venv
if errorlevel 1 goto :fail
goto :prepare

:start
rem Children (tests that start the studio, pip, playwright) see the venv as the active environment.
set "VIRTUAL_ENV=!VENV!"
set "PATH=!VENV!\Scripts;!PATH!"
if "!MODE!"=="test" goto :start_tests
rem Delayed expansion is off for this call, so an exclamation mark in the arguments reaches app.py unchanged.
setlocal DisableDelayedExpansion
"%PY%" app.py %*
endlocal & set "RC=%errorlevel%"
goto :after_run
:start_tests
"!PY!" -m pytest !ARGS!
set "RC=!errorlevel!"
:after_run
if not "!RC!"=="0" if "!DOUBLE_CLICKED!"=="1" pause
popd
exit /b !RC!


rem ---------------------------------------------------------------------------------------------
:ensure_venv
if exist "!PY!" (
    "!PY!" -c "!VENV_CHECK!" >nul 2>&1
    if not errorlevel 1 exit /b 0
    echo launch.bat: .venv is broken or uses an unsupported Python; rebuilding it.
)
rem Find a supported Python before deleting anything.
call :find_python
if errorlevel 1 exit /b 1
call :remove_venv
if errorlevel 1 exit /b 1
echo launch.bat: creating .venv with !BASE_PY!
rem Percent expansion splits "py -3.12" into a command and its flag before the line is parsed.
%BASE_PY% -m venv "!VENV!"
if errorlevel 1 (
    echo launch.bat: could not create .venv with !BASE_PY!; see the message above.
    call :remove_venv
    exit /b 1
)
if not exist "!PY!" (
    echo launch.bat: creating .venv with !BASE_PY! did not produce !PY!.
    exit /b 1
)
exit /b 0

:remove_venv
if not exist "!VENV!" exit /b 0
rmdir /s /q "!VENV!" >nul 2>&1
if exist "!VENV!" (
    echo launch.bat: could not delete the broken .venv folder; close other Inkframe windows and try again.
    exit /b 1
)
exit /b 0

:find_python
rem No probe may wait for input, since py -3.12 may offer to install a missing 3.12: stdin is nul.
set "BASE_PY="
for %%V in (3.12 3.11 3.10) do (
    if not defined BASE_PY (
        py -%%V -c "!SUPPORTED_CHECK!" <nul >nul 2>&1
        if not errorlevel 1 set "BASE_PY=py -%%V"
    )
)
if not defined BASE_PY (
    python -c "!SUPPORTED_CHECK!" <nul >nul 2>&1
    if not errorlevel 1 set "BASE_PY=python"
)
if defined BASE_PY exit /b 0
set "FOUND_PY="
for /f "delims=" %%P in ('python --version 2^>nul ^<nul') do if not defined FOUND_PY set "FOUND_PY=%%P"
echo.
echo Inkframe Studio needs 64-bit Python 3.10, 3.11 or 3.12: install Python 3.12 from https://www.python.org/downloads/ with "Add python.exe to PATH" ticked, then run launch.bat again.
if defined FOUND_PY echo The python on PATH is: !FOUND_PY!
exit /b 1

:install_torch
if defined INKFRAME_TORCH_INDEX (
    set "TORCH_INDEX=!INKFRAME_TORCH_INDEX!"
) else (
    call :choose_torch_index
)
set "TORCH_KEY=!TORCH_SPEC!|!TORCH_INDEX!"
set "OLD_KEY="
if exist "!TORCH_STAMP!" set /p OLD_KEY=<"!TORCH_STAMP!"
if "!OLD_KEY!"=="!TORCH_KEY!" exit /b 0
echo launch.bat: installing !TORCH_SPEC! from !TORCH_INDEX!
echo launch.bat: this can take several minutes and download a few GB; the window stays quiet meanwhile.
rem Another build of the same version counts as "already satisfied" for pip, so remove the old one first.
"!PY!" -m pip uninstall -y -q torch torchvision >nul 2>&1
"!PY!" -m pip install -q --disable-pip-version-check !TORCH_SPEC! --index-url "!TORCH_INDEX!"
if errorlevel 1 (
    echo launch.bat: pip could not install PyTorch; see pip's message above. If it mentions a long path, move the Inkframe folder to a short path such as C:\Inkframe.
    exit /b 1
)
> "!TORCH_STAMP!" echo(!TORCH_KEY!
exit /b 0

:choose_torch_index
set "TORCH_INDEX=!TORCH_CPU_INDEX!"
set "SMI=nvidia-smi"
where nvidia-smi >nul 2>&1
if errorlevel 1 set "SMI=!ProgramFiles!\NVIDIA Corporation\NVSMI\nvidia-smi.exe"
"!SMI!" -L >nul 2>&1
if errorlevel 1 exit /b 0
rem A GPU is there: pick the CUDA build from its compute capability and driver version.
set "TORCH_INDEX=!TORCH_LEGACY_CUDA_INDEX!"
"!SMI!" --query-gpu=compute_cap,driver_version --format=csv,noheader > "!VENV!\.inkframe-gpu.txt" 2>nul
"!PY!" -c "!GPU_PICK!" "!VENV!\.inkframe-gpu.txt" "!TORCH_CUDA_INDEX!" "!TORCH_LEGACY_CUDA_INDEX!" > "!VENV!\.inkframe-index.txt" 2>nul
if errorlevel 1 exit /b 0
set "PICKED="
set /p PICKED=<"!VENV!\.inkframe-index.txt"
if defined PICKED set "TORCH_INDEX=!PICKED!"
exit /b 0

:install_requirements
rem The stamp is a copy of the requirements file as last installed; fc /b says whether it changed.
fc /b "!REQ_FILE!" "!STAMP_FILE!" >nul 2>&1
if not errorlevel 1 exit /b 0
echo launch.bat: installing !REQ_FILE!
"!PY!" -m pip install -q --disable-pip-version-check -r "!REQ_FILE!"
if errorlevel 1 (
    echo launch.bat: pip could not install !REQ_FILE!; see pip's message above.
    exit /b 1
)
copy /y "!REQ_FILE!" "!STAMP_FILE!" >nul
exit /b 0

:import_failed
echo launch.bat: the installed packages do not load:
type "!IMPORT_ERROR!"
echo If the error above mentions a DLL, install the Microsoft Visual C++ Redistributable
echo from https://aka.ms/vs/17/release/vc_redist.x64.exe and run launch.bat again.
goto :fail

:fail
echo.
echo launch.bat: stopped; see the message above.
if "!DOUBLE_CLICKED!"=="1" pause
popd 2>nul
exit /b 1
